import { afterAll, describe, expect, test } from 'vitest';
import type { StageTrainer } from '../../gpu/stage/types.js';
import { Corpus } from '../../coordinator/data.js';
import type { StepEvent } from '../../coordinator/coordinator.js';
import { WorkerStage } from '../../main/node/engine-host.js';
import { testDevice } from '../helpers/gpu.js';
import {
  corpusPath,
  singleProcessTrainer,
  startCoordinator,
  startNode,
  tempDir,
  tinyConfig,
} from './helpers.js';

/**
 * The correctness bar of the network: 2 stages x 2 replicas over real WebSockets, GpuStages on lavapipe in
 * node worker threads, give the same loss at every step as the single-process trainer on the same
 * micro-batches.
 *
 * Tolerance 1e-4 relative. The two runs do the same arithmetic except the order of a few additions: each
 * replica accumulates only its own micro-batches and the coordinator adds the replicas' sums (single
 * process: one running sum), the global norm is summed in f64 on the CPU instead of on the GPU, and the
 * step loss is a sum divided by M instead of a sum of loss/M. Each differs by a few f32 ulps (~1e-7
 * relative) per step; AdamW normalises gradients, so such differences stay that size for 20 steps, and
 * 1e-4 leaves a wide margin while still catching any real mistake (a micro-batch dropped, doubled or
 * mis-scaled moves the loss by >1e-3 within a few steps).
 */
const STEPS = 20;

describe('pipeline-parallel training equals single-process training', () => {
  const { dir, cleanup } = tempDir();
  afterAll(cleanup);

  // Every micro-batch checked: the recomputes (forwards, and backwards with the checker's own gradients put
  // back) must leave the run's arithmetic untouched.
  test.each([0, 1])(
    '2 stages x 2 replicas, 20 steps, GPU engine, verification fraction %d',
    { timeout: 240_000 },
    async (fraction) => {
      const config = tinyConfig({
        steps: STEPS,
        checkpointEvery: 10,
        verification: { fraction, tolerance: 1e-3 },
        runId: `equivalence-${fraction}`,
      });
      const coordinator = await startCoordinator(config, `${dir}/${fraction}`);
      const stages: StageTrainer[] = [];
      const nodes = [0, 1, 2, 3].map(() =>
        startNode(coordinator.url, 'gpu', {
          createStage: async (engine, spec) => {
            const stage = await WorkerStage.create(engine, spec);
            // A node moved to another stage destroys its old one; keep only live stages.
            const destroy = stage.destroy.bind(stage);
            stage.destroy = () => {
              stages.splice(stages.indexOf(stage), 1);
              destroy();
            };
            stages.push(stage);
            return stage;
          },
        }),
      );
      const events: StepEvent[] = [];
      coordinator.on('step', (e: StepEvent) => events.push(e));
      await coordinator.finished;
      if (fraction > 0) {
        const metrics = await (await fetch(`http://127.0.0.1:${coordinator.port}/metrics`)).text();
        // Forwards of both stages, and backwards of stage 2 (stage 1's sends no gradient back to compare).
        expect(metrics).toMatch(/^tributary_verifications_total\{verdict="agreed",part="forward"\} [1-9]/m);
        expect(metrics).toMatch(/^tributary_verifications_total\{verdict="agreed",part="backward"\} [1-9]/m);
        expect(metrics).not.toMatch(/verdict="(wrong|disputed)"/);
      }

      // Replicas of a stage must hold the same bits after every step, or they would drift apart.
      const states = await Promise.all(
        stages.map(async (s) => ({ index: s.range.index, state: await s.exportState() })),
      );
      expect(states).toHaveLength(4);
      for (const stage of [0, 1]) {
        const [first, ...others] = states.filter((s) => s.index === stage).map((r) => r.state);
        expect(first!.step).toBe(STEPS);
        for (const other of others) {
          first!.params.forEach((t, i) =>
            expect(Buffer.from(t.data.buffer).equals(Buffer.from(other.params[i]!.data.buffer))).toBe(true),
          );
        }
      }
      await Promise.all(nodes.map((n) => n.stop()));
      expect(coordinator.status().stages.every((s) => s.nodes.length >= 1)).toBe(true);
      // Routing spread the micro-batches over both replicas of each stage.
      expect(coordinator.store.balances().filter((b) => b.units > 0)).toHaveLength(4);
      await coordinator.close();

      const { device } = await testDevice();
      try {
        const trainer = await singleProcessTrainer(device, config, Corpus.fromFile(corpusPath));
        const single: number[] = [];
        for (let step = 0; step < STEPS; step++) single.push(await trainer.trainStep(step));
        trainer.destroy();
        expect(events.map((e) => e.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i + 1));
        const worst = Math.max(...events.map((e, i) => Math.abs(e.loss - single[i]!) / Math.abs(single[i]!)));
        console.log(
          `loss ${single[0]!.toFixed(5)} -> ${single[STEPS - 1]!.toFixed(5)}; worst relative difference ${worst.toExponential(2)}`,
        );
        events.forEach((e, i) =>
          expect(Math.abs(e.loss - single[i]!) / Math.abs(single[i]!)).toBeLessThan(1e-4),
        );
        expect(single[STEPS - 1]!).toBeLessThan(single[0]!);
      } finally {
        device.destroy();
      }
    },
  );
});
