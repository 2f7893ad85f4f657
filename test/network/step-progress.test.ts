import { afterAll, expect, test } from 'vitest';
import { followRun } from '../../main/agent/follow-run.js';
import type { WorkGate } from '../../main/node/hooks.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';
import { until } from './processes.js';
import { openQuietAgent } from '../helpers/agent.js';

const { dir, cleanup } = tempDir();
afterAll(cleanup);

/** Lets micro-batches through until `holdAfter` are done, then holds the node until release(). */
class HoldingGate implements WorkGate {
  done = 0;
  private release_: (() => void) | null = null;
  constructor(private readonly holdAfter: number) {}
  waitUntilAllowed(): Promise<void> {
    return Promise.resolve();
  }
  afterWork(): Promise<void> {
    if (++this.done !== this.holdAfter) return Promise.resolve();
    return new Promise((resolve) => (this.release_ = resolve));
  }
  get holding(): boolean {
    return this.release_ !== null;
  }
  release(): void {
    this.release_?.();
    this.release_ = null;
  }
}

test(
  "the status API and the dashboard (pushed over the node's connection) show how far the step is",
  { timeout: 90_000 },
  async () => {
    const coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 2 }), dir);
    const gate = new HoldingGate(2);
    const node = startNode(coordinator.url, 'cpu', { gate });
    const agent = await openQuietAgent({
      dataDir: dir,
    });
    const unfollow = followRun(agent, node, { url: coordinator.url, coordinatorKey: coordinator.publicKey });
    try {
      // One node on the only stage: after its second micro-batch of four it is held, mid step 0.
      await until('the node held after two micro-batches', () => gate.holding, 60_000);
      // The node holds once its second result is sent; the coordinator counts it when it arrives.
      await until('the coordinator counts both', () => coordinator.status().microBatches.done === 2, 10_000);
      expect(coordinator.status()).toMatchObject({ step: 0, microBatches: { done: 2, total: 4 } });
      await until(
        'the dashboard at half a step',
        () => agent.snapshot().progress?.stepFraction === 0.5,
        10_000,
      );
      expect(agent.snapshot().progress).toMatchObject({ step: 0, totalSteps: 2 });
      gate.release();
      await coordinator.finished;
      expect(coordinator.status().microBatches).toEqual({ done: 0, total: 4 });
      // Both steps' losses reached the agent with the progress pushes, and the run's end reads as such.
      await until(
        'the run finished on the dashboard',
        () => agent.snapshot().network.phase === 'run-finished',
        10_000,
      );
      expect(agent.snapshot().loss.map((p) => p.step)).toEqual([0, 1]);
    } finally {
      // A failed expectation must not leave the node held: its stop waits for the work in hand.
      gate.release();
      unfollow();
      await node.stop();
      await agent.stop();
      await coordinator.close();
    }
  },
);
