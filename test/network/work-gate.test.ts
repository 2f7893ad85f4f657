import { afterAll, expect, test } from 'vitest';
import type { WorkGate } from '../../main/node/hooks.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';
import { until } from './processes.js';

const STEPS = 16;
const { dir, cleanup } = tempDir();
afterAll(cleanup);

/** A policy stand-in: open, or closed until resume() is called. */
class ToggleGate implements WorkGate {
  private waiters: Array<() => void> = [];
  paused = false;
  busy: number[] = [];
  waitUntilAllowed(): Promise<void> {
    return this.paused ? new Promise((resolve) => this.waiters.push(resolve)) : Promise.resolve();
  }
  afterWork(busyMs: number): Promise<void> {
    this.busy.push(busyMs);
    return Promise.resolve();
  }
  resume(): void {
    this.paused = false;
    for (const w of this.waiters.splice(0)) w();
  }
}

test(
  'a node paused by its WorkGate hands work back, is not banned, and resumes when the gate opens',
  { timeout: 120_000 },
  async () => {
    const coordinator = await startCoordinator(tinyConfig({ steps: STEPS, banMs: 600_000 }), dir);
    const gate = new ToggleGate();
    const gated = startNode(coordinator.url, 'gpu', { gate });
    const others = [0, 1, 2].map(() => startNode(coordinator.url, 'gpu'));
    let connects = 0;
    gated.on('connected', () => connects++);

    // Pause as soon as it holds a stage: its first micro-batch must be handed back.
    gated.once('assigned', () => (gate.paused = true));
    await until('the gated node to hand back', () => gated.status.reason.startsWith('paused'), 30_000);
    const unitsWhilePaused = gated.status.receipts;
    const pausedAt = coordinator.status().step;
    await until('progress without it', () => coordinator.status().step >= pausedAt + 2);
    gate.resume();
    // Back at work after the pause (a ban would have kept it out for ten minutes).
    await until('receipts after resuming', () => gated.status.receipts > unitsWhilePaused, 60_000);
    await coordinator.finished;

    expect(coordinator.status().step).toBe(STEPS);
    expect(connects).toBeGreaterThanOrEqual(2);
    expect(gate.busy.length).toBeGreaterThan(0);
    expect(gate.busy.every((ms) => ms > 0)).toBe(true);
    const balances = coordinator.store.balances();
    expect(balances.reduce((n, b) => n + b.units, 0)).toBe(STEPS * 2 * 4);
    await until(
      'receipts delivered',
      () => balances.find((b) => b.nodeId === gated.nodeId)!.units === gated.status.receipts,
      30_000,
    );
    expect(balances.find((b) => b.nodeId === gated.nodeId)!.units).toBe(gated.status.receipts);
    await Promise.all([gated, ...others].map((n) => n.stop()));
    await coordinator.close();
  },
);
