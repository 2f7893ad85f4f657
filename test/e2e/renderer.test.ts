import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Browser, Page } from 'playwright-core';
import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { Agent } from '../../main/agent/agent.js';
import { startDashboardServer, type DashboardServer } from '../../main/agent/dashboard/server.js';
import { launchChromium } from '../helpers/chromium.js';
import { axeViolations, contrastRatio } from './axe.js';
import { rendererBundle } from './renderer-bundle.js';
import { FakeAgent } from './renderer-fixtures/fake-agent.js';
import { sampleSnapshot } from './renderer-fixtures/snapshot.js';
import { testCoordinator, testReceipt } from '../agent/signing.js';

const SCREENSHOT_DIR = process.env.RENDERER_SCREENSHOTS ?? tmpdir();

describe('renderer in Chromium, served by the real dashboard server', () => {
  let browser: Browser;
  let bundle: string;
  let agent: FakeAgent;
  let server: DashboardServer;
  let page: Page;
  const errors: string[] = [];
  /** Set by the test that stops the server: the browser then logs the refused connections, as it should. */
  let networkErrorsExpected = false;

  beforeAll(async () => {
    bundle = await rendererBundle();
    browser = await launchChromium();
  });
  afterAll(async () => {
    await browser?.close();
  });

  beforeEach(async () => {
    await server?.close();
    agent = new FakeAgent(sampleSnapshot());
    server = await startDashboardServer({ host: agent, token: 'x'.repeat(43), staticDir: bundle, port: 0 });
    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    page = await context.newPage();
    page.setDefaultTimeout(10_000);
    errors.length = 0;
    // A CSP violation or an uncaught error is a failure, not a warning.
    page.on('pageerror', (error) => errors.push(error.message));
    networkErrorsExpected = false;
    page.on('console', (message) => {
      // Stopping the server on purpose also cuts responses in flight (ERR_INCOMPLETE_CHUNKED_ENCODING, ...):
      // every network error is expected then, and none otherwise.
      const refused = /net::ERR_|WebSocket connection to .* failed|status of 401/.test(message.text());
      if (message.type() === 'error' && !(networkErrorsExpected && refused)) errors.push(message.text());
    });
    await page.goto(server.url);
    return async () => {
      await context.close();
      expect(errors).toEqual([]);
    };
  });
  afterAll(async () => server?.close());

  it('shows the state and its reason, GPU limits, stage and progress, and a loss plot', async () => {
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Contributing');
    expect(await page.getByTestId('reason').textContent()).toBe(
      'Training stage 3 of 8 (blocks 6–8) at 85%: you have been away for 12 min',
    );
    expect(await page.getByTestId('network-host').textContent()).toBe('127.0.0.1:9');
    expect(await page.getByTestId('rate-tokens').textContent()).toBe('412.5 tokens/s');
    expect(await page.getByTestId('rate-credits').textContent()).toBe('1.90 credits per hour');
    expect(await page.locator('h1').textContent()).toBe('Dashboard');
    expect(await page.title()).toBe('Dashboard · Contributing — Tributary');
    expect(page.url()).not.toContain('token=');
    const text = await page.locator('main').innerText();
    expect(text).toContain('71 °C of limit 80 °C');
    expect(await page.getByTestId('gpu-name').textContent()).toBe('NVIDIA GeForce RTX 3060');
    expect(text).toContain('5.3 GB of 12.0 GB');
    expect(text).toContain('Stage 3 of 8, blocks 6–8');
    expect(text).toContain('step 412 of 2,000');
    expect(text).toContain('62%');
    expect(text).toMatch(/Loss 1\.\d{3} at step 411, down from 4\.450 at step 1\./);
    expect(text).toMatch(/Held-out validation loss \(dashed\) 1\.\d{3} at step 391\./);
    expect(await page.locator('.chart-plot canvas').count()).toBe(1);
    await page.screenshot({ path: join(SCREENSHOT_DIR, 'tributary-dashboard.png'), fullPage: true });
  });

  it('sends "pause for 1 hour" to the agent and then offers to resume', async () => {
    await page.getByRole('button', { name: 'Pause for 1 hour' }).focus();
    await page.keyboard.press('Enter');
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Paused');
    expect(agent.commands).toEqual([{ type: 'pause', duration: '1h' }]);
    expect(await page.locator('.pause-until').textContent()).toMatch(/^Paused until /);
    // Focus moves to the button that replaced the one pressed, and the change is announced.
    await expect.poll(() => page.evaluate(() => document.activeElement?.textContent)).toBe('Resume now');
    expect(await page.getByTestId('announcer').textContent()).toBe('Paused: Paused by you.');

    await page.keyboard.press('Enter');
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Contributing');
    expect(agent.commands.at(-1)).toEqual({ type: 'resume' });
    await expect.poll(() => page.evaluate(() => document.activeElement?.textContent)).toBe('Pause');
    expect(await page.getByTestId('announcer').textContent()).toBe('Contributing: Contributing again.');
  });

  it('follows snapshots the agent pushes', async () => {
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Contributing');
    agent.push({
      state: 'waiting',
      reasonCode: 'gpu-hot',
      reason: 'Waiting: the GPU is at 84 °C, above your 80 °C limit.',
    });
    await expect.poll(() => page.getByTestId('reason').textContent()).toContain('above your 80 °C limit');
    expect(await page.getByTestId('state').textContent()).toBe('Waiting');
  });

  it('shows validation errors next to the settings they concern and sends nothing invalid', async () => {
    await page.goto(`${server.url.replace(/\?.*$/, '')}#/settings`);
    await page.getByLabel('GPU temperature limit').fill('120');
    await page.getByLabel('Start after no keyboard or mouse input for').fill('soon');
    await page.getByRole('button', { name: 'Add a time window' }).click();
    await page.locator('.window input[type=time]').nth(1).fill('22:00');
    await page.getByRole('button', { name: 'Save settings' }).click();

    await expect.poll(() => page.locator('#gpuTempLimitC-error').textContent()).toContain('at most 100 °C');
    expect(await page.locator('#idleMinutes-error').textContent()).toContain('enter a number');
    expect(await page.getByLabel('GPU temperature limit').getAttribute('aria-invalid')).toBe('true');
    expect(await page.getByRole('status').filter({ hasText: 'Not saved' }).textContent()).toMatch(
      /Not saved: \d+ problems? to fix/,
    );
    expect(agent.commands).toEqual([]);

    await page.getByLabel('Start after no keyboard or mouse input for').fill('5');
    // The idle field is fixed; the others still hold, so the schema errors remain.
    await page.getByRole('button', { name: 'Save settings' }).click();
    await expect.poll(() => page.locator('#idleMinutes-error').count()).toBe(0);
    expect(await page.locator('.window .error').textContent()).toContain('different start and end');
    await page.screenshot({ path: join(SCREENSHOT_DIR, 'tributary-settings-errors.png'), fullPage: true });

    await page.getByLabel('GPU temperature limit').fill('75');
    await page.locator('.window input[type=time]').nth(1).fill('07:00');
    await page.getByRole('button', { name: 'Save settings' }).click();
    await expect.poll(() => agent.commands.length).toBe(1);
    const sent = agent.commands[0];
    expect(sent?.type).toBe('updateSettings');
    if (sent?.type !== 'updateSettings') return;
    expect(sent.patch).toMatchObject({
      gpuTempLimitC: 75,
      idleAfterSeconds: 300,
      schedule: [{ days: [1, 2, 3, 4, 5], start: '22:00', end: '07:00' }],
    });
    expect(agent.snapshot().settings.gpuTempLimitC).toBe(75);
  });

  it('shows balances in credits, earnings and receipts grouped by session, and checks the payout address', async () => {
    await page.goto(`${server.url.replace(/\?.*$/, '')}#/wallet`);
    await expect.poll(() => page.getByTestId('balance-confirmed').textContent()).toBe('8.46 credits');
    expect(await page.getByTestId('balance-pending').textContent()).toBe('0.0062 credits');
    expect(await page.getByTestId('balance-revoked').textContent()).toBe('0.0031 credits');
    expect(await page.getByTestId('reconciliation').textContent()).toContain('3.10 TFLOP less');
    // Six receipts minutes apart in one run: one session line, its receipts one click away.
    expect(await page.getByTestId('session').count()).toBe(1);
    expect(await page.getByTestId('session').textContent()).toContain('3 confirmed2 pending1 revoked');
    expect(await page.getByTestId('session-verified').textContent()).toBe(
      '2 of 6 verified by a second replica',
    );
    await page.getByTestId('session').locator('summary').click();
    const rows = page.locator('tbody tr');
    expect(await rows.count()).toBe(6);
    // Newest first: r-998 and r-997 are the two a second replica agreed with.
    expect(await rows.evaluateAll((trs) => trs.map((tr) => tr.lastElementChild?.textContent))).toEqual([
      'Not checked',
      'Not checked',
      'Agreed',
      'Agreed',
      'Not checked',
      'Not checked',
    ]);
    expect(await page.locator('tbody .receipt-confirmed').count()).toBe(3);
    expect(await page.locator('tbody .receipt-pending').first().textContent()).toBe('Pending');
    expect(await page.locator('tbody .receipt-revoked').textContent()).toBe('Revoked');
    expect(await page.locator('.chart-plot canvas').count()).toBe(1);

    const address = page.getByLabel('Where payouts go');
    await address.fill('0x1234');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    expect(await page.locator('#payout-address-error').textContent()).toContain('40 hexadecimal characters');
    expect(agent.commands).toEqual([]);

    await address.fill('0x52908400098527886E0F7030069857D2E4169EE7');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await expect.poll(() => page.locator('#payout-address-error').textContent()).toContain('checksum');
    await page.screenshot({ path: join(SCREENSHOT_DIR, 'tributary-wallet.png'), fullPage: true });

    await address.fill('0x52908400098527886e0f7030069857d2e4169ee7');
    await page.getByRole('button', { name: 'Save', exact: true }).click();
    await expect
      .poll(() => agent.snapshot().wallet.payoutAddress)
      .toBe('0x52908400098527886e0f7030069857d2e4169ee7');

    const download = page.waitForEvent('download');
    await page.getByRole('link', { name: 'Export CSV' }).click();
    expect((await download).suggestedFilename()).toBe('tributary-receipts.csv');
  });

  it('reads well in dark mode and in a narrow window', async () => {
    await page.emulateMedia({ colorScheme: 'dark' });
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Contributing');
    const background = await page.evaluate(() => getComputedStyle(document.documentElement).backgroundColor);
    expect(background).toBe('rgb(17, 22, 28)');
    await page.screenshot({ path: join(SCREENSHOT_DIR, 'tributary-dashboard-dark.png'), fullPage: true });
    // 420 px (the narrowest desktop window) and 320 px (WCAG's reflow width): one column, nothing cut off.
    for (const width of [420, 320]) {
      await page.setViewportSize({ width, height: 900 });
      for (const view of ['dashboard', 'wallet', 'settings']) {
        await page.goto(`${server.url.replace(/\?.*$/, '')}#/${view}`);
        await expect
          .poll(() => page.locator('h1').textContent())
          .toBe(view[0]!.toUpperCase() + view.slice(1));
        expect(
          await page.evaluate(() => document.documentElement.scrollWidth),
          `${view} at ${width}`,
        ).toBeLessThanOrEqual(width);
      }
    }
    await page.setViewportSize({ width: 420, height: 900 });
    await page.goto(`${server.url.replace(/\?.*$/, '')}#/wallet`);
    await expect.poll(() => page.getByTestId('balance-confirmed').textContent()).toBe('8.46 credits');
    await page.screenshot({ path: join(SCREENSHOT_DIR, 'tributary-wallet-420-dark.png'), fullPage: true });
  });

  it('says so when the agent goes away, and reconnects when it is back', async () => {
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Contributing');
    const port = server.port;
    networkErrorsExpected = true;
    await server.close();
    await expect
      .poll(() => page.getByRole('status').first().textContent())
      .toContain('Cannot reach the Tributary agent');
    // The last known state stays, greyed, with nothing that could send a command.
    expect(await page.getByTestId('view-frame').getAttribute('disabled')).toBe('');
    expect(await page.getByRole('button', { name: 'Pause', exact: true }).isDisabled()).toBe(true);
    expect(await page.getByTestId('reason').textContent()).toContain('Training stage 3 of 8');
    expect(await axeViolations(page)).toEqual([]);
    server = await startDashboardServer({ host: agent, token: 'x'.repeat(43), staticDir: bundle, port });
    agent.push({ reason: 'Contributing: back after a restart.' });
    await expect
      .poll(() => page.getByTestId('reason').textContent(), { timeout: 20_000 })
      .toContain('back after a restart');
  });

  it('passes axe (WCAG 2.1 AA) on every view, in both schemes, running, paused, with errors, empty and first run', async () => {
    const base = server.url.replace(/\?.*$/, '');
    const failures: string[] = [];
    const check = async (what: string): Promise<void> => {
      for (const v of await axeViolations(page)) failures.push(`${what}: ${v}`);
    };
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      agent.push(sampleSnapshot());
      for (const view of ['dashboard', 'wallet', 'settings']) {
        await page.goto(`${base}#/${view}`);
        await expect
          .poll(() => page.locator('h1').textContent())
          .toBe(view[0]!.toUpperCase() + view.slice(1));
        if (view === 'wallet') await page.getByTestId('session').locator('summary').click();
        await check(`${scheme} ${view} (full wallet)`);
      }
      await page.getByLabel('GPU temperature limit').fill('120');
      await page.getByRole('button', { name: 'Save settings' }).click();
      await expect.poll(() => page.locator('#gpuTempLimitC-error').count()).toBe(1);
      await check(`${scheme} settings with errors`);

      await page.goto(`${base}#/dashboard`);
      await page.getByRole('button', { name: 'Pause', exact: true }).click();
      await expect.poll(() => page.getByTestId('state').textContent()).toBe('Paused');
      await check(`${scheme} paused`);
      const empty = sampleSnapshot();
      agent.push({
        wallet: {
          ...empty.wallet,
          confirmedFlops: 0,
          pendingFlops: 0,
          revokedFlops: 0,
          earnings: [],
          recentReceipts: [],
        },
        loss: [],
        stage: null,
        progress: null,
        network: {
          ...empty.network,
          phase: 'disconnected',
          detail: 'Disconnected (1006); retrying in 4 s',
          retryAt: new Date(Date.now() + 4000).toISOString(),
        },
        rates: { tokensPerSecond: null, flopsPerHour: null },
      });
      await check(`${scheme} dashboard, empty and disconnected`);
      await page.goto(`${base}#/wallet`);
      await expect.poll(() => page.getByTestId('balance-confirmed').textContent()).toBe('0 credits');
      await check(`${scheme} empty wallet`);
      agent.push({
        state: 'paused',
        reasonCode: 'not-set-up',
        reason: 'Paused until you choose a network to join and accept',
      });
      await expect.poll(() => page.locator('h1').textContent()).toBe('Welcome to Tributary');
      await page.getByRole('button', { name: 'Check' }).click();
      await expect.poll(() => page.locator('#first-run-network-url-error').count()).toBe(1);
      await check(`${scheme} first run with an error`);
    }
    expect(failures).toEqual([]);
  });

  it('shows a focus ring of 3:1 or more, also on a field with an error, in both schemes', async () => {
    const base = server.url.replace(/\?.*$/, '');
    for (const scheme of ['light', 'dark'] as const) {
      await page.emulateMedia({ colorScheme: scheme });
      await page.goto(`${base}#/settings`);
      await page.getByLabel('GPU temperature limit').fill('120');
      await page.getByRole('button', { name: 'Save settings' }).click();
      await expect.poll(() => page.locator('#gpuTempLimitC-error').count()).toBe(1);
      for (const target of [
        page.getByRole('button', { name: 'Save settings' }),
        page.getByLabel('GPU temperature limit'),
      ]) {
        await target.focus();
        await page.keyboard.press('Shift+Tab');
        await page.keyboard.press('Tab');
        const ring = await page.evaluate(() => {
          const el = document.activeElement as HTMLElement;
          const style = getComputedStyle(el);
          const card = el.closest('.card') ?? document.documentElement;
          return {
            width: parseFloat(style.outlineWidth),
            outlineStyle: style.outlineStyle,
            color: style.outlineColor,
            background: getComputedStyle(card).backgroundColor,
          };
        });
        expect(ring.outlineStyle, `${scheme}`).toBe('solid');
        expect(ring.width).toBeGreaterThanOrEqual(2);
        expect(
          contrastRatio(ring.color, ring.background),
          `${scheme} ${ring.color} on ${ring.background}`,
        ).toBeGreaterThanOrEqual(3);
      }
    }
  });

  it('keeps focus when a schedule window is removed or changes are discarded, and says what happened', async () => {
    await page.goto(`${server.url.replace(/\?.*$/, '')}#/settings`);
    await page.getByRole('button', { name: 'Add a time window' }).click();
    await page.getByRole('button', { name: 'Add a time window' }).click();
    await page.getByRole('button', { name: 'Remove window 1' }).click();
    await expect
      .poll(() => page.evaluate(() => document.activeElement?.getAttribute('aria-label')))
      .toBe('Remove window 1');
    await page.getByRole('button', { name: 'Remove window 1' }).click();
    await expect
      .poll(() => page.evaluate(() => document.activeElement?.textContent))
      .toBe('Add a time window');
    await page.getByLabel('GPU temperature limit').fill('70');
    await page.getByRole('button', { name: 'Discard changes' }).click();
    await expect
      .poll(() => page.evaluate(() => document.activeElement?.textContent))
      .toBe('Changes discarded.');
    expect(await page.getByLabel('GPU temperature limit').inputValue()).toBe('80');
  });

  it('edits networks in Settings: a network that cannot be reached says so; removing one keeps focus and says what happened', async () => {
    await page.goto(`${server.url.replace(/\?.*$/, '')}#/settings`);
    // The settings view renders its rows once the agent's snapshot has reached the page.
    await expect.poll(() => page.locator('.network-row').count()).toBe(1);
    await page.getByText('Add a network').click();
    await page.getByLabel('Network address').fill('ws://127.0.0.1:1');
    await page.getByRole('button', { name: 'Check' }).click();
    await expect
      .poll(() => page.locator('#settings-network-url-error').textContent())
      .toBe('cannot reach ws://127.0.0.1:1');
    await page.getByRole('button', { name: 'Remove ws://127.0.0.1:9' }).click();
    await expect
      .poll(() => page.evaluate(() => document.activeElement?.textContent))
      .toBe('Removed ws://127.0.0.1:9.');
    expect(agent.commands.at(-1)).toEqual({
      type: 'updateSettings',
      patch: { networks: [], activeNetwork: null },
    });
    await expect.poll(() => page.locator('.network-row').count()).toBe(0);
  });

  it('says the token is the problem when the agent no longer accepts it', async () => {
    await expect.poll(() => page.getByTestId('state').textContent()).toBe('Contributing');
    const port = server.port;
    networkErrorsExpected = true;
    await server.close();
    // The agent comes back with another token (its token file was replaced): the page's cookie is now stale.
    server = await startDashboardServer({ host: agent, token: 'z'.repeat(43), staticDir: bundle, port });
    await expect
      .poll(() => page.getByRole('status').first().textContent(), { timeout: 20_000 })
      .toContain('open the dashboard with the link it printed');
  });
});

describe('renderer in Chromium with the Electron preload bridge', () => {
  it('uses window.tributary instead of a WebSocket when the preload provides it', async () => {
    const bundle = await rendererBundle();
    const agent = new FakeAgent(sampleSnapshot());
    const server = await startDashboardServer({
      host: agent,
      token: 'y'.repeat(43),
      staticDir: bundle,
      port: 0,
    });
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      const snapshot = { ...sampleSnapshot(), reason: 'Reported over IPC.' };
      // Stands in for the preload: the same three calls contextBridge exposes, recording commands.
      await page.addInitScript((initial) => {
        const sent: unknown[] = [];
        Object.assign(window, {
          __sent: sent,
          tributary: {
            snapshot: async () => initial,
            onSnapshot: () => () => undefined,
            command: async (command: unknown) => {
              sent.push(command);
              return { ok: true };
            },
          },
        });
      }, snapshot);
      let sockets = 0;
      page.on('websocket', () => (sockets += 1));
      await page.goto(server.url);
      await expect.poll(() => page.getByTestId('reason').textContent()).toBe('Reported over IPC.');
      await page.getByRole('button', { name: 'Pause until tomorrow' }).click();
      await expect
        .poll(() => page.evaluate('window.__sent'))
        .toEqual([{ type: 'pause', duration: 'tomorrow' }]);
      expect(sockets).toBe(0);
      expect(agent.commands).toEqual([]);
    } finally {
      await browser.close();
      await server.close();
    }
  });
});

describe('renderer in Chromium against the real agent', () => {
  it("pauses the real policy, saves settings to disk, shows the agent's own payout checks and which receipts a second replica verified", async () => {
    const bundle = await rendererBundle();
    const dataDir = await mkdtemp(join(tmpdir(), 'tributary-agent-'));
    const agent = await Agent.open({ dataDir, telemetrySources: [], hostSensors: false, tickMs: 0 });
    const server = await agent.startDashboard({ staticDir: bundle, port: 0 });
    const browser = await launchChromium();
    try {
      const page = await browser.newPage();
      page.setDefaultTimeout(10_000);
      await page.goto(server.url);
      await expect.poll(() => page.getByTestId('reason').textContent()).toBe(agent.snapshot().reason);
      await page.screenshot({ path: join(SCREENSHOT_DIR, 'tributary-real-agent.png'), fullPage: true });

      await page.getByRole('button', { name: 'Pause until tomorrow' }).click();
      await expect.poll(() => page.getByTestId('state').textContent()).toBe('Paused');
      expect(agent.snapshot()).toMatchObject({ state: 'paused', reasonCode: 'user-paused' });
      expect(await page.locator('.pause-until').textContent()).toMatch(/^Paused until /);

      await page.goto(`${server.url.replace(/\?.*$/, '')}#/settings`);
      await page.getByLabel('GPU temperature limit').fill('72');
      await page.getByRole('button', { name: 'Save settings' }).click();
      // "Saved." shows once the agent has answered, which it does after writing settings.json.
      await expect.poll(() => page.getByRole('status').filter({ hasText: 'Saved.' }).count()).toBe(1);
      expect(agent.snapshot().settings.gpuTempLimitC).toBe(72);
      const saved = JSON.parse(await readFile(join(dataDir, 'settings.json'), 'utf8')) as {
        gpuTempLimitC: number;
      };
      expect(saved.gpuTempLimitC).toBe(72);

      await page.goto(`${server.url.replace(/\?.*$/, '')}#/wallet`);
      const address = page.getByLabel('Where payouts go');
      await address.fill('0x52908400098527886E0F7030069857D2E4169Ee7');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await expect
        .poll(() => page.locator('#payout-address-error').textContent())
        .toContain('EIP-55 checksum');
      await address.fill('0x52908400098527886e0f7030069857d2e4169ee7');
      await page.getByRole('button', { name: 'Save', exact: true }).click();
      await expect
        .poll(() => agent.snapshot().wallet.payoutAddress)
        .toBe('0x52908400098527886E0F7030069857D2E4169EE7');

      // Signed receipts and a statement saying a second replica verified two of them: from the real ledger,
      // through the WebSocket's changes, to the session line and each receipt's row.
      const coordinator = testCoordinator();
      agent.trustCoordinatorKey(coordinator.keyHex);
      for (let i = 1; i <= 3; i++) agent.receipts.accept(coordinator.sign(testReceipt(i)));
      agent.receipts.acceptStatement!(
        coordinator.state({
          seq: 1,
          receipts: 3,
          confirmed: ['r-1', 'r-2', 'r-3'],
          verified: ['r-1', 'r-3'],
        }),
      );
      agent.tick();
      await expect
        .poll(() => page.getByTestId('session-verified').textContent())
        .toBe('2 of 3 verified by a second replica');
      await page.getByTestId('session').locator('summary').click();
      expect(
        await page
          .locator('tbody tr')
          .evaluateAll((trs) => trs.map((tr) => tr.lastElementChild?.textContent)),
      ).toEqual(['Agreed', 'Not checked', 'Agreed']);
      expect(await axeViolations(page)).toEqual([]);
    } finally {
      await browser.close();
      await agent.stop();
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
