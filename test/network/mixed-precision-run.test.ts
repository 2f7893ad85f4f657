import { afterAll, describe, expect, test } from 'vitest';
import type { StepEvent } from '../../coordinator/coordinator.js';
import type { RunConfig } from '../../coordinator/run-config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import { NonFiniteError } from '../../gpu/stage/checks.js';
import type { NodeRuntimeOptions } from '../../main/node/runtime.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';

const { dir, cleanup } = tempDir();
afterAll(cleanup);

async function train(
  config: RunConfig,
  nodes: Array<Partial<NodeRuntimeOptions> & { engine?: 'cpu' | 'gpu' }>,
): Promise<{ events: StepEvent[]; lossScale: number; metrics: string; dropped: number }> {
  const coordinator = await startCoordinator(config, `${dir}/${config.runId}`);
  const events: StepEvent[] = [];
  coordinator.on('step', (e: StepEvent) => events.push(e));
  const running = nodes.map(({ engine, ...extra }) => startNode(coordinator.url, engine ?? 'cpu', extra));
  await coordinator.finished;
  const lossScale = coordinator.status().lossScale;
  const metrics = await (await fetch(`http://127.0.0.1:${coordinator.port}/metrics`)).text();
  await Promise.all(running.map((n) => n.stop()));
  await coordinator.close();
  const dropped = Number(/^tributary_dropped_peers_total (\d+)/m.exec(metrics)?.[1] ?? 0);
  return { events, lossScale, metrics, dropped };
}

/** A CPU stage whose `at`-th backward overflows, as f16 does with a scaled gradient (once, or every time). */
function overflowing(at: number, once = true): Partial<NodeRuntimeOptions> {
  let calls = 0;
  return {
    createStage: async (_engine, spec) => {
      const stage = new CpuStage(spec.config, spec.range, spec.shape, spec.seed);
      const backward = stage.backward.bind(stage);
      stage.backward = async (gradOut, lossScale) => {
        if (++calls === at || (!once && calls > at))
          throw new NonFiniteError(`stage ${spec.range.index}'s input gradient overflowed`);
        return backward(gradOut, lossScale);
      };
      return stage;
    },
  };
}

describe('mixed precision across the network', () => {
  test('a 2-stage mixed run on the GPU engine learns like its fp32 twin', { timeout: 300_000 }, async () => {
    const base = { stages: 2, steps: 4, microBatchesPerStep: 2, checkpointEvery: 100 };
    const gpu = { engine: 'gpu' as const };
    const fp32 = await train(tinyConfig({ ...base, runId: 'fp32' }), [gpu, gpu]);
    const mixed = await train(tinyConfig({ ...base, runId: 'mixed', precision: 'mixed' }), [gpu, gpu]);
    expect(mixed.events.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    // f16 operands: the losses follow fp32's within 1% relative, and the run learns.
    mixed.events.forEach((e, i) =>
      expect(Math.abs(e.loss - fp32.events[i]!.loss) / fp32.events[i]!.loss).toBeLessThan(1e-2),
    );
    expect(mixed.events.at(-1)!.loss).toBeLessThan(mixed.events[0]!.loss);
    expect(mixed.lossScale).toBe(2 ** 16);
    expect(fp32.lossScale).toBe(1);
  });

  test(
    'an overflow halves the loss scale and replays the step; no one is dropped',
    { timeout: 120_000 },
    async () => {
      const config = tinyConfig({
        steps: 4,
        runId: 'overflow',
        precision: 'mixed',
        lossScaling: { initial: 1024 },
      });
      const { events, lossScale, metrics, dropped } = await train(config, [overflowing(3), {}]);
      expect(events.map((e) => e.step)).toEqual([1, 2, 3, 4]);
      expect(events.reduce((n, e) => n + e.attempts, 0)).toBe(5);
      expect(lossScale).toBe(512);
      expect(metrics).toMatch(/^tributary_overflows_total 1$/m);
      expect(dropped).toBe(0);
    },
  );

  test('at the smallest loss scale an overflow is the node, and it goes', { timeout: 120_000 }, async () => {
    const config = tinyConfig({
      steps: 3,
      runId: 'floor',
      precision: 'mixed',
      lossScaling: { initial: 1 },
      banMs: 600_000,
    });
    const { events, dropped } = await train(config, [overflowing(1, false), {}, {}]);
    expect(events.map((e) => e.step)).toEqual([1, 2, 3]);
    expect(dropped).toBe(1);
  });
});
