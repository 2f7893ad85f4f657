import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { formatCredits } from '../../shared/dashboard/credits.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import type { Coordinator } from '../../coordinator/coordinator.js';
import { ContributorHost } from '../../main/host/contributor-host.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { launchChromium } from '../helpers/chromium.js';
import { quiet, startCoordinator, tempDir, tinyConfig } from '../network/helpers.js';
import { axeViolations } from './axe.js';
import { rendererBundle } from './renderer-bundle.js';

const SCREENSHOT_DIR = process.env.RENDERER_SCREENSHOTS ?? tmpdir();
const { dir, cleanup } = tempDir('tributary-flow-');

/**
 * A new contributor, end to end: the real dashboard (Chromium) of a real contributor host (agent, ledger,
 * node on the CPU engine) and a real coordinator on 127.0.0.1. From the first-run screen to training, credit
 * confirmed by the coordinator's signed statements, the run's end, the coordinator going away and the agent going
 * away: at each step the page must say what the network says, at 1280 and 420 px, with no sideways scrolling.
 */
describe('a new contributor, in Chromium, against a real agent and coordinator', () => {
  let browser: Browser;
  let page: Page;
  let coordinator: Coordinator;
  let host: ContributorHost;
  const errors: string[] = [];
  let networkErrorsExpected = false;

  beforeAll(async () => {
    const bundle = await rendererBundle();
    // 12 steps at a 10% duty cycle: slow enough to watch, short enough to finish.
    coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 12 }), join(dir, 'coordinator'));
    host = await ContributorHost.start({
      dataDir: join(dir, 'contributor'),
      keys: Ed25519Keys.generate(),
      engine: 'cpu',
      logger: quiet,
      settings: { ...defaultSettings, runWhen: 'always', dutyCyclePct: 10 },
      pollHost: false,
      hostSensors: false,
      telemetrySources: [],
      dashboard: { staticDir: bundle, port: 0 },
    });
    browser = await launchChromium();
    page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
    page.setDefaultTimeout(15_000);
    page.on('pageerror', (error) => errors.push(error.message));
    page.on('console', (message) => {
      if (message.type() !== 'error') return;
      if (networkErrorsExpected && /net::ERR_|WebSocket connection to .* failed/.test(message.text())) return;
      errors.push(message.text());
    });
    await page.goto(host.dashboard!.url);
  }, 60_000);

  afterAll(async () => {
    await browser?.close();
    await host?.stop();
    await coordinator?.close();
    cleanup();
    expect(errors).toEqual([]);
  });

  const reason = (): Promise<string | null> => page.getByTestId('reason').textContent();
  /** Both widths, each checked for sideways scrolling, and the page checked by axe. */
  const capture = async (name: string): Promise<void> => {
    for (const width of [1280, 420]) {
      await page.setViewportSize({ width, height: 900 });
      // Charts follow the new width on their next resize callback.
      await expect
        .poll(() => page.evaluate(() => document.documentElement.scrollWidth), {
          message: `${name} at ${width}`,
        })
        .toBeLessThanOrEqual(width);
      await page.screenshot({
        path: join(SCREENSHOT_DIR, `tributary-flow-${name}-${width}.png`),
        fullPage: true,
      });
    }
    await page.setViewportSize({ width: 1280, height: 900 });
    expect(await axeViolations(page), name).toEqual([]);
  };

  it(
    'starts paused on one screen, shows the coordinator key it checked, and pins it on accept',
    { timeout: 60_000 },
    async () => {
      await expect.poll(() => page.locator('h1').textContent()).toBe('Welcome to Tributary');
      expect(host.currentNode).toBeNull();
      expect(host.agent.snapshot()).toMatchObject({ state: 'paused', reasonCode: 'not-set-up' });
      await capture('first-run');

      await page.getByLabel('Network address').fill('http://127.0.0.1:1');
      await page.getByRole('button', { name: 'Check' }).click();
      await expect.poll(() => page.locator('#first-run-network-url-error').textContent()).toContain('ws://');
      await page.getByLabel('Network address').fill(coordinator.url);
      await page.getByRole('button', { name: 'Check' }).click();
      await expect.poll(() => page.locator('.probe code.key').textContent()).toBe(coordinator.publicKey);
      expect(await page.locator('.probe').textContent()).toContain('test-run');
      await page.getByLabel(/Where payouts go/).fill('0x52908400098527886E0F7030069857D2E4169Ee7');
      await page.getByRole('button', { name: 'Accept and start' }).click();
      await expect.poll(() => page.locator('#first-run-payout-error').textContent()).toContain('checksum');
      expect(host.currentNode).toBeNull();
      await page.getByLabel(/Where payouts go/).fill('0x52908400098527886e0f7030069857d2e4169ee7');
      await page.getByRole('button', { name: 'Accept and start' }).click();

      await expect.poll(() => page.locator('h1').textContent()).toBe('Dashboard');
      expect(host.agent.snapshot().settings).toMatchObject({
        activeNetwork: coordinator.url,
        networks: [{ url: coordinator.url, coordinatorKey: coordinator.publicKey }],
        startAtLogin: true,
      });
    },
  );

  it(
    'says it trains stage 1 of 1 while it does, and lists its receipts in a session',
    { timeout: 60_000 },
    async () => {
      await expect.poll(reason, { timeout: 30_000 }).toMatch(/^Training stage 1 of 1 \(blocks 1–2\) at 10%/);
      expect(await page.getByTestId('state').textContent()).toBe('Contributing');
      await expect
        .poll(() => page.getByTestId('network-detail').textContent())
        .toBe('Training stage 1 of 1 (blocks 1–2)');
      await capture('training');
      await page.goto(`${host.dashboard!.url.replace(/\?.*$/, '')}#/wallet`);
      await expect.poll(() => page.getByTestId('session').count(), { timeout: 30_000 }).toBe(1);
    },
  );

  it(
    "confirms credit within a step of its commit, as the coordinator's signed statements say",
    { timeout: 60_000 },
    async () => {
      const wallet = () => host.agent.snapshot().wallet;
      await expect.poll(() => wallet().confirmedFlops, { timeout: 30_000 }).toBeGreaterThan(0);
      const steps = () => new Set(host.agent.ledger.receipts().map((r) => r.step)).size;
      await expect.poll(steps, { timeout: 30_000 }).toBeGreaterThanOrEqual(2);
      // Every receipt of a step before the newest committed one is confirmed already.
      const newest = Math.max(...host.agent.ledger.receipts().map((r) => r.step));
      const older = host.agent.ledger.receipts().filter((r) => r.step < newest);
      expect(older.length).toBeGreaterThan(0);
      expect(older.every((r) => r.status === 'confirmed')).toBe(true);
      // Both sides are read on every poll: training goes on, and an expectation taken once could be
      // overtaken by the next statement before the page showed it (seen under load).
      await expect
        .poll(
          async () =>
            (await page.getByTestId('balance-confirmed').textContent()) ===
            formatCredits(wallet().confirmedFlops),
          { timeout: 3_000 },
        )
        .toBe(true);
      await page.getByTestId('session').first().locator('summary').click();
      expect(await page.locator('tbody .receipt-confirmed').count()).toBeGreaterThan(0);
      await capture('wallet-confirmed');
    },
  );

  it('says the run finished once it has', { timeout: 90_000 }, async () => {
    await page.goto(`${host.dashboard!.url.replace(/\?.*$/, '')}#/dashboard`);
    await coordinator.finished;
    await expect.poll(reason, { timeout: 20_000 }).toMatch(/^The run finished/);
    expect(await page.getByTestId('state').textContent()).toBe('Waiting');
    await capture('run-finished');
  });

  it('says the coordinator is gone and when it retries', { timeout: 60_000 }, async () => {
    await coordinator.close();
    await expect.poll(reason, { timeout: 20_000 }).toMatch(/^(Disconnected|Cannot reach the coordinator)/);
    expect(await page.getByTestId('state').textContent()).toBe('Waiting');
    await expect.poll(() => page.getByTestId('network-detail').textContent()).toMatch(/[Rr]etrying in \d+ s/);
    expect(await page.getByTestId('stage').textContent()).toBe('No stage assigned yet');
    await capture('coordinator-down');
  });

  it(
    'greys the last known state and disables every control when the agent is gone',
    { timeout: 60_000 },
    async () => {
      networkErrorsExpected = true;
      await host.dashboard!.close();
      await expect
        .poll(() => page.getByRole('status').first().textContent())
        .toContain('Cannot reach the Tributary agent');
      expect(await page.getByTestId('view-frame').getAttribute('disabled')).toBe('');
      expect(await page.getByRole('button', { name: 'Pause', exact: true }).isDisabled()).toBe(true);
      expect(await page.evaluate(() => getComputedStyle(document.querySelector('.view-frame')!).filter)).toBe(
        'grayscale(1)',
      );
      await capture('agent-gone');
    },
  );
});
