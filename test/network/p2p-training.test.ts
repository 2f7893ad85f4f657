import { afterAll, describe, expect, it } from 'vitest';
import type { CoordinatorStatus } from '../../coordinator/coordinator.js';
import type { RunConfig } from '../../coordinator/run-config.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import type { Tensor } from '../../shared/protocol/frame.js';
import type { NodeMessage } from '../../shared/protocol/messages.js';
import { misbehavingStage } from '../adversarial/misbehaving-stage.js';
import { until } from './processes.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';

const { dir, cleanup } = tempDir('tributary-p2p-training-');
afterAll(cleanup);

/** Trains `config` on one CPU node per stage; returns the step losses and the coordinator's final status. */
async function train(
  name: string,
  config: RunConfig,
  setup: (url: string) => Promise<NodeRuntime[]>,
): Promise<{ losses: number[]; status: CoordinatorStatus; closes: string[][] }> {
  const coordinator = await startCoordinator(config, `${dir}/${name}`);
  const nodes = await setup(coordinator.url);
  const seen = nodes.map((n) => {
    const closes: string[] = [];
    n.on('disconnected', (e: { code: number; reason: string }) => closes.push(`${e.code} ${e.reason}`));
    return closes;
  });
  await coordinator.finished;
  // Closes during training only: stopping the nodes closes them too.
  const closes = seen.map((c) => [...c]);
  await Promise.all(nodes.map((n) => n.stop()));
  const status = coordinator.status();
  const losses = coordinator.store.losses().map((l) => l.loss);
  await coordinator.close();
  return { losses, status, closes };
}

const oneNodePerStage = (stages: number) => async (url: string) =>
  Array.from({ length: stages }, () => startNode(url, 'cpu'));

describe('tensors peer to peer over libp2p (dataPlane p2p)', () => {
  it('2 stages: the coordinator carries 0 tensor bytes and the losses equal the relayed run', async () => {
    // 48 tensors each way between the two nodes: more than a connection's default 32 open streams.
    const base = { steps: 4, microBatchesPerStep: 12, checkpointEvery: 4 };
    const relay = await train('relay', tinyConfig(base), oneNodePerStage(2));
    const p2p = await train('p2p', tinyConfig({ ...base, dataPlane: 'p2p' }), oneNodePerStage(2));
    expect(relay.status.relayedBytes).toBeGreaterThan(0);
    expect(p2p.status).toMatchObject({ state: 'done', step: 4, relayedBytes: 0 });
    expect(p2p.losses).toHaveLength(4);
    p2p.losses.forEach((loss, i) => expect(Math.abs(loss - relay.losses[i]!)).toBeLessThan(1e-6));
  }, 120_000);

  it('a node whose activations are NaN is dropped, not its consumer, and training finishes', async () => {
    const { status, closes } = await train(
      'nan',
      tinyConfig({ steps: 2, dataPlane: 'p2p', banMs: 600_000 }),
      async (url) => {
        const liar = startNode(url, 'cpu', { createStage: misbehavingStage('nan-activations') });
        await until('the liar is placed on stage 1', () => liar.status.stage !== null, 60_000);
        return [liar, startNode(url, 'cpu'), startNode(url, 'cpu')];
      },
    );
    expect(closes[0]![0]).toMatch(/^4001 .*non-finite/);
    expect(
      closes
        .slice(1)
        .flat()
        .filter((c) => !/^100[01] /.test(c)),
    ).toEqual([]);
    expect(status).toMatchObject({ state: 'done', step: 2, relayedBytes: 0 });
  }, 120_000);

  it('a node that hides NaN activations behind an honest summary is reported by its consumer, proven by what it hands back, and dropped', async () => {
    const { status, closes } = await train(
      'hidden-nan',
      tinyConfig({ steps: 2, dataPlane: 'p2p', banMs: 600_000 }),
      async (url) => {
        const liar = startNode(url, 'cpu', { createStage: misbehavingStage('nan-activations') });
        // The lie at the wire: every summary says the tensor it sent was fine.
        liar.once('connected', () => {
          const channel = (liar as unknown as { channel: { send(m: NodeMessage, t?: Tensor[]): void } })
            .channel;
          const send = channel.send.bind(channel);
          channel.send = (m, t) =>
            send(m.type === 'result' && m.sent ? { ...m, sent: { finite: true, maxAbs: 1 } } : m, t);
        });
        await until('the liar is placed on stage 1', () => liar.status.stage !== null, 60_000);
        return [liar, startNode(url, 'cpu'), startNode(url, 'cpu')];
      },
    );
    expect(closes[0]![0]).toMatch(/^4001 .*activations holding NaN.*found by node .*confirmed/);
    expect(closes.slice(1).flat()).toEqual([]);
    // The only tensors through the coordinator are those it asked the liar to hand back (one per report
    // that came before it was dropped): its proof.
    expect(status).toMatchObject({ state: 'done', step: 2 });
    expect(status.relayedBytes).toBeGreaterThan(0);
    expect(status.relayedBytes % (2 * 16 * 32 * 4)).toBe(0);
  }, 120_000);

  it('a node lost mid-run: the run finishes on the nodes left, still peer to peer', async () => {
    let lost = '';
    const { status } = await train('lost', tinyConfig({ steps: 6, dataPlane: 'p2p' }), async (url) => {
      const nodes = [0, 1, 2].map(() => startNode(url, 'cpu'));
      // Once training runs, the last stage's node goes; the spare node takes its place.
      void until('a step is committed', () => nodes.some((n) => n.status.receipts > 0), 60_000).then(() => {
        const victim = nodes.find((n) => n.status.stage?.index === 1)!;
        lost = victim.nodeId;
        return victim.stop();
      });
      return nodes;
    });
    expect(lost).not.toBe('');
    expect(status).toMatchObject({ state: 'done', step: 6 });
    // Replayed, nothing is relayed; rerouted, the coordinator fetches the tensors the lost node had been
    // sent from their senders and hands them to its replacement: whole boundary tensors (2 x 16 x 32 f32),
    // fewer than the 8 a relayed step moves.
    const tensorBytes = 2 * 16 * 32 * 4;
    expect(status.relayedBytes % tensorBytes).toBe(0);
    expect(status.relayedBytes).toBeLessThan(8 * tensorBytes);
  }, 120_000);
});
