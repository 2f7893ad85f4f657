import { afterAll, describe, expect, it } from 'vitest';
import { startCoordinator, tempDir, tinyConfig } from '../network/helpers.js';
import { RawClient } from '../network/raw-client.js';

const { dir, cleanup } = tempDir('tributary-replay-');
afterAll(cleanup);

/** A node that answers a task once, honestly, then sends the same result again to be credited twice. */
describe('a replayed result', () => {
  it('is refused as a protocol violation: the node is dropped and nothing is credited for it', async () => {
    const coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 2 }), `${dir}/c`);
    const node = await RawClient.open(coordinator.url);
    try {
      await node.authenticate();
      await node.next('welcome');
      node.send({ type: 'join' });
      const assign = await node.next('assign');
      node.send({ type: 'loaded', step: assign.step as number });
      const task = await node.next('task');
      const result = { type: 'result' as const, taskId: task.taskId as number, loss: 5.5, busyMs: 1 };
      node.send(result);
      node.send(result);
      expect(await node.closed).toBe(1008);
      expect(coordinator.status().receipts).toBe(0);
    } finally {
      node.close();
      await coordinator.close();
    }
  }, 60_000);
});
