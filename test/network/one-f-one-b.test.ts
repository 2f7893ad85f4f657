import { afterAll, describe, expect, test } from 'vitest';
import type { StepEvent } from '../../coordinator/coordinator.js';
import { Corpus } from '../../coordinator/data.js';
import type { RunConfig } from '../../coordinator/run-config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageForwardResult, StageInput } from '../../gpu/stage/types.js';
import type { StageSpec } from '../../main/node/stage-factory.js';
import { corpusPath, singleProcess, startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';

/** A CPU stage that logs what it runs (F<mb> forward, B<mb> backward) and may hold fewer stashes. */
class RecordingStage extends CpuStage {
  readonly log: string[] = [];
  private pendingForward = -1;

  constructor(spec: StageSpec, capacity?: number) {
    super(spec.config, spec.range, spec.shape, spec.seed);
    if (capacity !== undefined) Object.defineProperty(this, 'stashCapacity', { value: capacity });
  }

  override async forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult> {
    this.pendingForward = this.log.length;
    this.log.push('F?');
    return super.forward(input, targets);
  }

  override async stash(id: number): Promise<void> {
    this.log[this.pendingForward] = `F${id}`;
    return super.stash(id);
  }

  override async restore(id: number): Promise<void> {
    this.log.push(`B${id}`);
    return super.restore(id);
  }

  /** The log with stash ids renamed to the order their forwards ran in each step (so F<i> is micro-batch i). */
  schedule(step: number, microBatches: number): string {
    const window = this.log.slice(step * 2 * microBatches, (step + 1) * 2 * microBatches);
    const order = new Map<string, number>();
    for (const e of window) if (e.startsWith('F')) order.set(e.slice(1), order.size);
    return window.map((e) => `${e[0]}${order.get(e.slice(1))}`).join(' ');
  }

  /** The most micro-batches held between forward and backward at any moment. */
  maxInFlight(): number {
    let held = 0;
    let most = 0;
    for (const e of this.log) {
      held += e.startsWith('F') ? 1 : -1;
      most = Math.max(most, held);
    }
    return most;
  }
}

async function runPipeline(
  config: RunConfig,
  dir: string,
  replicas: number,
  capacity?: (stage: number) => number | undefined,
): Promise<{ events: StepEvent[]; stages: RecordingStage[]; stashes: number[][] }> {
  const coordinator = await startCoordinator(config, dir);
  const stages: RecordingStage[] = [];
  let stashes: number[][] = [];
  coordinator.on('step', () => {
    stashes = coordinator.status().stages.map((s) => s.stashes);
  });
  const nodes = Array.from({ length: config.stages * replicas }, () =>
    startNode(coordinator.url, 'cpu', {
      createStage: async (_engine, spec) => {
        const stage = new RecordingStage(spec, capacity?.(spec.range.index));
        stages.push(stage);
        return stage;
      },
    }),
  );
  const events: StepEvent[] = [];
  coordinator.on('step', (e: StepEvent) => events.push(e));
  await coordinator.finished;
  await Promise.all(nodes.map((n) => n.stop()));
  await coordinator.close();
  return { events, stages, stashes };
}

/** The same steps in one process, on CPU stages, micro-batch by micro-batch. */
async function singleProcessLosses(config: RunConfig): Promise<number[]> {
  const trainer = await singleProcess(
    config,
    Corpus.fromFile(corpusPath),
    (range) => new CpuStage(config.model, range, config.microBatch, config.seed),
  );
  const losses: number[] = [];
  for (let step = 0; step < config.steps; step++) losses.push(await trainer.trainStep(step));
  trainer.destroy();
  return losses;
}

function worstRelative(events: StepEvent[], single: number[]): number {
  return Math.max(...events.map((e, i) => Math.abs(e.loss - single[i]!) / Math.abs(single[i]!)));
}

describe('1F1B: micro-batches in flight', () => {
  const { dir, cleanup } = tempDir();
  afterAll(cleanup);

  test('4 stages x 1, 8 micro-batches: stage s holds at least S - s, backwards in order; equals one process', async () => {
    const config = tinyConfig({
      model: { vocabSize: 256, contextLength: 16, width: 16, heads: 2, layers: 4, mlpRatio: 4 },
      stages: 4,
      microBatchesPerStep: 8,
      steps: 4,
      runId: 'f1b-4x1',
    });
    const { events, stages, stashes } = await runPipeline(config, `${dir}/4x1`, 1);
    expect(events.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    const byStage = [0, 1, 2].map((s) => stages.find((st) => st.range.index === s)!);
    byStage.forEach((stage, s) => {
      // 1F1B's S - s, and more where the link's latency is long against the compute (here, a tiny model on
      // 127.0.0.1: the round trips are not small next to it), never more than the micro-batches of a step.
      expect(stage.maxInFlight(), `stage ${s}`).toBeGreaterThanOrEqual(4 - s);
      expect(stage.maxInFlight(), `stage ${s}`).toBeLessThanOrEqual(8);
      const schedule = stage.schedule(1, 8).split(' ');
      // Backwards leave in micro-batch order, so gradients accumulate in the single process's order.
      expect(schedule.filter((e) => e.startsWith('B'))).toEqual([0, 1, 2, 3, 4, 5, 6, 7].map((i) => `B${i}`));
    });
    // Stage 0's schedule: fill, alternate, drain; it ends with the last micro-batch's backward.
    const schedule0 = byStage[0]!.schedule(1, 8);
    expect(schedule0.startsWith('F0 F1 F2 F3')).toBe(true);
    expect(schedule0.endsWith('B7')).toBe(true);
    expect(stashes.slice(0, 3).every((s) => s[0]! >= 4)).toBe(true);
    const single = await singleProcessLosses(config);
    expect(worstRelative(events, single)).toBeLessThan(1e-5);
  });

  test('3 stages x 2 replicas: equals one process', async () => {
    const config = tinyConfig({
      model: { vocabSize: 256, contextLength: 16, width: 16, heads: 2, layers: 3, mlpRatio: 4 },
      stages: 3,
      microBatchesPerStep: 6,
      steps: 4,
      runId: 'f1b-3x2',
    });
    const { events, stages } = await runPipeline(config, `${dir}/3x2`, 2);
    expect(events.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    // Every node worked (placement may have moved some, leaving more stage objects than nodes).
    expect(stages.filter((s) => s.log.length > 0).length).toBeGreaterThanOrEqual(6);
    const single = await singleProcessLosses(config);
    expect(worstRelative(events, single)).toBeLessThan(1e-4);
  });

  test('held-out validation forwards (no backward) do not fill the stashes', async () => {
    const config = tinyConfig({
      model: { vocabSize: 256, contextLength: 16, width: 16, heads: 2, layers: 3, mlpRatio: 4 },
      stages: 3,
      microBatchesPerStep: 4,
      steps: 3,
      validation: { every: 1, microBatches: 5 },
      runId: 'f1b-validation',
    });
    const { events, stages } = await runPipeline(config, `${dir}/validation`, 1, (s) =>
      s === 0 ? 3 : undefined,
    );
    expect(events.map((e) => e.step)).toEqual([1, 2, 3]);
    expect(stages.find((s) => s.range.index === 0)!.maxInFlight()).toBeLessThanOrEqual(3 + 5);
  });

  test('a stage that can stash 2 never holds more than 2, and says so in the status', async () => {
    const config = tinyConfig({
      model: { vocabSize: 256, contextLength: 16, width: 16, heads: 2, layers: 4, mlpRatio: 4 },
      stages: 4,
      microBatchesPerStep: 8,
      steps: 2,
      runId: 'f1b-limit',
    });
    const { events, stages, stashes } = await runPipeline(config, `${dir}/limit`, 1, (s) =>
      s === 0 ? 2 : undefined,
    );
    expect(events).toHaveLength(2);
    expect(stages.find((s) => s.range.index === 0)!.maxInFlight()).toBe(2);
    // Nothing gets past stage 0 faster than it lets micro-batches in.
    expect(stages.find((s) => s.range.index === 1)!.maxInFlight()).toBe(2);
    expect(stashes[0]).toEqual([2]);
    const single = await singleProcessLosses(config);
    expect(worstRelative(events, single)).toBeLessThan(1e-5);
  });
});
