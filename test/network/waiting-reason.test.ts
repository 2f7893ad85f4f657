import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { waitingForStages } from '../../shared/stage-label.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';
import { until } from './processes.js';

const { dir, cleanup } = tempDir('tributary-waiting-');
const nodes: NodeRuntime[] = [];
afterAll(async () => {
  await Promise.all(nodes.map((n) => n.stop()));
  cleanup();
});

test('waiting reasons count stages from 1 and say of how many', () => {
  expect(waitingForStages([1], 2)).toBe('waiting for a node to train stage 2 of 2');
  expect(waitingForStages([0, 1], 2)).toBe('waiting for nodes to train stages 1 and 2 of 2');
  expect(waitingForStages([0, 2, 3], 4)).toBe('waiting for nodes to train stages 1, 3 and 4 of 4');
});

test('a run with one node for two stages says which stage it waits for', { timeout: 60_000 }, async () => {
  const coordinator = await startCoordinator(tinyConfig({ stages: 2, steps: 2 }), join(dir, 'coord'));
  const node = startNode(coordinator.url, 'cpu');
  nodes.push(node);
  await until(
    'the reason to name the empty stage',
    () => coordinator.status().reason === 'waiting for a node to train stage 2 of 2',
    30_000,
  );
  // The node hears the same sentence, so its status line says what the run lacks.
  await until('the node to hear why', () => node.status.reason.startsWith('run waiting'), 10_000);
  expect(node.status.reason).toBe('run waiting: waiting for a node to train stage 2 of 2');
  expect(node.status.stage?.index).toBe(0);
  expect(coordinator.status().step).toBe(0);
  await node.stop();
  await coordinator.close();
});
