import { afterAll, expect, test } from 'vitest';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';
import { RawClient } from './raw-client.js';

const { dir, cleanup } = tempDir();
afterAll(cleanup);

test(
  'a peer that goes silent mid micro-batch is dropped, banned, and its micro-batch replayed',
  { timeout: 90_000 },
  async () => {
    const coordinator = await startCoordinator(
      tinyConfig({ steps: 3, taskTimeoutMs: 2000, warmupTimeoutMs: 3000, banMs: 60_000 }),
      dir,
    );
    const silent = await RawClient.open(coordinator.url);
    await silent.authenticate();
    await silent.next('welcome');
    silent.send({ type: 'join' });
    const assign = await silent.next('assign');
    silent.send({ type: 'loaded', step: assign.step as number });
    const honest = [startNode(coordinator.url, 'cpu'), startNode(coordinator.url, 'cpu')];

    // It takes a micro-batch (every replica gets one per step) and never answers.
    await silent.next('task');
    expect(await silent.closed).toBe(4001);
    await coordinator.finished;
    expect(coordinator.status().step).toBe(3);
    const balances = coordinator.store.balances();
    expect(balances.map((b) => b.nodeId)).not.toContain(silent.keys.publicKeyHex);
    expect(balances.reduce((n, b) => n + b.units, 0)).toBe(3 * 2 * 4);
    expect(await coordinator.metrics.dropped.get()).toMatchObject({ values: [{ value: 1 }] });

    // Banned: the same key is refused for a while.
    const again = await RawClient.open(coordinator.url);
    again.send({
      type: 'hello',
      nodeId: silent.keys.publicKeyHex,
      client: 'raw',
      engine: 'cpu',
      receiptCursor: 0,
    });
    expect((await again.next('error')).message).toMatch(/banned/);
    await Promise.all(honest.map((n) => n.stop()));
    await coordinator.close();
  },
);
