import { afterAll, describe, expect, it } from 'vitest';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { ContributorHost } from '../../main/host/contributor-host.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { quiet, startCoordinator, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';

const { dir, cleanup } = tempDir('tributary-host-');
afterAll(cleanup);

/**
 * The composition the CLI and the desktop app share, against a real coordinator on 127.0.0.1 and a node
 * training on the CPU reference: it starts paused until a network is accepted, pins the key it was shown,
 * and its one state follows the network through training, the run's end and the coordinator going away.
 */
describe('ContributorHost', () => {
  it(
    'stays paused until a network is accepted, then trains, finishes and says when the coordinator is gone',
    { timeout: 120_000 },
    async () => {
      const coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 3 }), `${dir}/coordinator`);
      const keys = Ed25519Keys.generate();
      const host = await ContributorHost.start({
        dataDir: `${dir}/node`,
        keys,
        engine: 'cpu',
        logger: quiet,
        settings: { ...defaultSettings, runWhen: 'always' },
        pollHost: false,
        hostSensors: false,
        telemetrySources: [],
        dashboard: null,
      });
      const state = () => host.agent.snapshot();
      try {
        expect(state()).toMatchObject({ state: 'paused', reasonCode: 'not-set-up', dutyCyclePct: 0 });
        expect(state().network.phase).toBe('not-joined');
        expect(host.currentNode).toBeNull();

        const probed = await host.agent.command({ type: 'probeNetwork', url: coordinator.url });
        expect(probed).toEqual({
          ok: true,
          probe: { url: coordinator.url, coordinatorKey: coordinator.publicKey, runId: 'test-run' },
        });
        expect(await host.agent.command({ type: 'probeNetwork', url: 'ws://127.0.0.1:9' })).toMatchObject({
          ok: false,
          errors: [expect.stringContaining('cannot reach 127.0.0.1:9')],
        });

        // A bad payout address refuses the whole acceptance: nothing is saved, nothing starts.
        const network = { url: coordinator.url, coordinatorKey: coordinator.publicKey };
        const refused = await host.agent.command({
          type: 'joinNetwork',
          network,
          payoutAddress: '0x1234',
          startAtLogin: true,
        });
        expect(refused.ok).toBe(false);
        expect(state().settings.activeNetwork).toBeNull();
        expect(host.currentNode).toBeNull();

        // A key that is not the coordinator's: the node refuses it and the state says why.
        const wrongKey = { url: coordinator.url, coordinatorKey: 'ab'.repeat(32) };
        expect(
          await host.agent.command({ type: 'joinNetwork', network: wrongKey, startAtLogin: false }),
        ).toEqual({ ok: true });
        await until('the wrong key refused', () => state().reason.includes('is not the pinned one'), 20_000);
        expect(state()).toMatchObject({ state: 'waiting', reasonCode: 'disconnected' });

        const joined = await host.agent.command({
          type: 'joinNetwork',
          network,
          payoutAddress: '0x52908400098527886e0f7030069857d2e4169ee7',
          startAtLogin: true,
        });
        expect(joined).toEqual({ ok: true });
        expect(state().settings).toMatchObject({ activeNetwork: coordinator.url, startAtLogin: true });
        expect(state().wallet.payoutAddress).toBe('0x52908400098527886E0F7030069857D2E4169EE7');
        expect(host.currentNode?.nodeId).toBe(keys.publicKeyHex);

        await until(
          'training',
          () => state().reason.startsWith('Training stage 1 of 1 (blocks 1–2)'),
          60_000,
        );
        expect(state()).toMatchObject({ state: 'running', reasonCode: 'running' });

        await coordinator.finished;
        await until('the run finished', () => state().reasonCode === 'run-finished', 20_000);
        expect(state()).toMatchObject({ state: 'waiting' });
        expect(state().reason).toMatch(/^The run finished/);
        expect(state().progress).toMatchObject({ step: 3, totalSteps: 3 });
        // The ledger took this node's receipts: signed by the pinned key, issued to this node id.
        const { pendingFlops, confirmedFlops } = state().wallet;
        expect(pendingFlops + confirmedFlops).toBeGreaterThan(0);

        await coordinator.close();
        await until('disconnected', () => state().reasonCode === 'disconnected', 20_000);
        expect(state().reason).toMatch(
          /^Disconnected \(1001: coordinator shutting down\); retrying in \d+ s$/,
        );
        // Then it cannot reach it at all, and says what to check.
        await until('unreachable', () => state().reason.startsWith('Cannot reach'), 20_000);
        expect(state().reason).toMatch(
          /^Cannot reach the coordinator at ws:\/\/127\.0\.0\.1:\d+ \(.*\); is it running, and are the host and port right\? Retrying in \d+ s$/,
        );
        expect(state().network.retryAt).not.toBeNull();
      } finally {
        await host.stop();
        await coordinator.close();
      }
    },
  );
});
