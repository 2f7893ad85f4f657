import { afterAll, describe, expect, it } from 'vitest';
import type { CoordinatorStatus } from '../../coordinator/coordinator.js';
import { PeerRefused } from '../../main/node/peer-tensors.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import type { CoordinatorMessage, NodeMessage } from '../../shared/protocol/messages.js';
import { startCoordinator, startNode, tamperPeerTensors, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';
import { closes } from './misbehaving-stage.js';

const { dir, cleanup } = tempDir('tributary-p2p-disputes-');
afterAll(cleanup);

type Task = Extract<CoordinatorMessage, { type: 'task' }>;
interface Internals {
  runTask(channel: { send(m: NodeMessage): void }, task: Task): Promise<void>;
}
const internals = (node: NodeRuntime) => node as unknown as Internals;
const badInput = (taskId: number) =>
  ({ type: 'badInput', taskId, reason: 'activations holding NaN' }) as NodeMessage;

/**
 * A peer-to-peer run where the node on `liarStage` (placed after an honest node on stage 1, before the
 * rest) lies as `lie` sets it up. Returns the run's end, the liar's closes and the honest nodes' closes
 * that were not a normal end.
 */
async function run(
  name: string,
  liarStage: 0 | 1,
  lie: (liar: NodeRuntime) => void,
): Promise<{
  status: CoordinatorStatus;
  metrics: string;
  liar: Array<{ code: number; reason: string }>;
  honest: Array<{ code: number; reason: string }>;
}> {
  const coordinator = await startCoordinator(
    tinyConfig({ steps: 3, dataPlane: 'p2p', banMs: 600_000 }),
    `${dir}/${name}`,
  );
  const options = { p2pInputTimeoutMs: 1_000 };
  const good: NodeRuntime[] = [];
  if (liarStage === 1) {
    good.push(startNode(coordinator.url, 'cpu', options));
    await until('the first honest node is placed', () => good[0]!.status.stage !== null, 60_000);
  }
  const liar = startNode(coordinator.url, 'cpu', options);
  const liarCloses = closes(liar);
  lie(liar);
  await until('the liar is placed', () => liar.status.stage?.index === liarStage, 60_000);
  while (good.length < 3) good.push(startNode(coordinator.url, 'cpu', options));
  const goodCloses = good.map(closes);
  try {
    await coordinator.finished;
    const metrics = await (await fetch(`http://127.0.0.1:${coordinator.port}/metrics`)).text();
    return {
      status: coordinator.status(),
      metrics,
      // Closes during the run only: stopping the nodes closes them too.
      liar: [...liarCloses],
      honest: goodCloses.flat().filter((c) => c.code !== 1000 && c.code !== 1001),
    };
  } finally {
    await Promise.all([liar, ...good].map((n) => n.stop()));
    await coordinator.close();
  }
}

/** One pair per honest neighbour the liar exchanged tensors with: placement decides how many (of 3). */
function expectDisputedPairs(metrics: string): void {
  const pairs = Number(/^tributary_relayed_pairs_total\{reason="dispute"\} (\d+)$/m.exec(metrics)?.[1] ?? 0);
  expect(pairs).toBeGreaterThanOrEqual(1);
  expect(pairs).toBeLessThanOrEqual(3);
}

describe('peer to peer, a node is never dropped on its neighbour’s word alone', () => {
  it('a consumer that says every tensor sent to it was bad gets its neighbours relayed, not dropped, and is dropped when it says so of a tensor the coordinator saw', async () => {
    const { status, liar, honest } = await run('lying-consumer', 1, (node) => {
      internals(node).runTask = async (channel, task) => channel.send(badInput(task.taskId));
    });
    expect(honest).toEqual([]);
    expect(liar[0]).toMatchObject({ code: 4001, reason: expect.stringMatching(/took none from a peer/) });
    expect(status).toMatchObject({ state: 'done', step: 3 });
    expect(status.relayedBytes).toBeGreaterThan(0);
  }, 120_000);

  it('a producer that says it sent its tensors but never does costs one replay per neighbour: their tensors are relayed and the run finishes, no one dropped', async () => {
    const { status, metrics, liar, honest } = await run('silent-producer', 0, (node) => {
      tamperPeerTensors(node, (peers) => {
        peers.send = async () => {};
      });
    });
    expect([...liar, ...honest]).toEqual([]);
    expect(status).toMatchObject({ state: 'done', step: 3 });
    expect(status.relayedBytes).toBeGreaterThan(0);
    expectDisputedPairs(metrics);
  }, 120_000);

  it('a report against an honest producer is settled by what the producer hands back: no one dropped, and the run goes on', async () => {
    // The liar's own tensors are fine; it turns every input it is sent peer to peer into a refusal.
    const { status, metrics, liar, honest } = await run('false-report', 1, (node) => {
      tamperPeerTensors(node, (peers) => {
        peers.receive = () => Promise.reject(new PeerRefused('tensor 0 holds NaN'));
      });
    });
    expect([...liar, ...honest]).toEqual([]);
    expect(status).toMatchObject({ state: 'done', step: 3 });
    expectDisputedPairs(metrics);
  }, 120_000);
});
