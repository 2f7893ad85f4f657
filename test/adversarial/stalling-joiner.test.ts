import { afterAll, describe, expect, it } from 'vitest';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';

const { dir, cleanup } = tempDir('tributary-stall-');
afterAll(cleanup);

/** A joiner that takes its stage and never reports it loaded (its engine "compiles" forever). */
const stall = (): Promise<never> => new Promise<never>(() => {});

describe('a joiner that never reports its stage loaded', () => {
  it('does not hold placement: honest nodes train while it and a fresh-key twin hang', async () => {
    // The default allowance for loading a stage (warm-up, 300 s) stays: the staller is not dropped early,
    // placement simply stops waiting for it.
    const coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 3 }), `${dir}/c`);
    const stallers = [startNode(coordinator.url, 'cpu', { createStage: stall })];
    await until(
      'the staller is loading',
      () => stallers[0]!.status.reason.startsWith('loading stage'),
      30_000,
    );
    const started = Date.now();
    const honest = startNode(coordinator.url, 'cpu');
    await until('the honest node is placed', () => honest.status.stage !== null, 30_000);
    stallers.push(startNode(coordinator.url, 'cpu', { createStage: stall }));
    await coordinator.finished;
    const seconds = (Date.now() - started) / 1000;
    expect(coordinator.status()).toMatchObject({ state: 'done', step: 3 });
    expect(seconds).toBeLessThan(30);
    expect(coordinator.status().stages[0]!.nodes).toEqual([honest.nodeId]);
    // A staller's stop never settles (its stage never finishes loading); its socket closes all the same.
    for (const staller of stallers) void staller.stop();
    await honest.stop();
    await coordinator.close();
  }, 90_000);
});
