import { afterAll, expect, test } from 'vitest';
import type { StepEvent } from '../../coordinator/coordinator.js';
import { Corpus } from '../../coordinator/data.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageSpec } from '../../main/node/stage-factory.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { corpusPath, singleProcess, startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';

const { dir, cleanup } = tempDir();
afterAll(cleanup);

/** A CPU stage that says when it reaches its `at`-th backward within one step after the first, then carries on. */
class Tripwire extends CpuStage {
  private backwards = 0;
  private countedStep = -1;
  private tripped = false;

  constructor(
    spec: StageSpec,
    private readonly currentStep: () => number,
    private readonly at: number,
    private readonly reached: () => void,
  ) {
    super(spec.config, spec.range, spec.shape, spec.seed);
  }

  override async backward(gradOut: Float32Array | null, lossScale: number): Promise<Float32Array | null> {
    const step = this.currentStep();
    if (step !== this.countedStep) [this.countedStep, this.backwards] = [step, 0];
    if (step >= 1 && ++this.backwards === this.at && !this.tripped) {
      this.tripped = true;
      this.reached();
    }
    return super.backward(gradOut, lossScale);
  }
}

test.each([
  [1, 'relay'],
  [2, 'relay'],
  [1, 'p2p'],
  [2, 'p2p'],
] as const)(
  'a node of stage %i that leaves mid-step (%s): a replica redoes its micro-batches, no replay, the run equals one process',
  { timeout: 60_000 },
  async (stageNumber, dataPlane) => {
    const config = tinyConfig({
      stages: 2,
      microBatchesPerStep: 8,
      steps: 4,
      runId: `reroute-${stageNumber}-${dataPlane}`,
      dataPlane,
    });
    const coordinator = await startCoordinator(config, `${dir}/${stageNumber}-${dataPlane}`);
    const events: StepEvent[] = [];
    coordinator.on('step', (e: StepEvent) => events.push(e));
    // The first node of the stage to reach its second backward in a step after the first leaves
    // there: it holds a finished unit (its gradient), a stash and queued tasks.
    let victim: NodeRuntime | null = null;
    let tripped!: () => void;
    const midStep = new Promise<void>((resolve) => (tripped = resolve));
    const nodes: NodeRuntime[] = [];
    for (let i = 0; i < 4; i++) {
      const node: NodeRuntime = startNode(coordinator.url, 'cpu', {
        createStage: async (_engine, spec) =>
          spec.range.index !== stageNumber - 1
            ? new CpuStage(spec.config, spec.range, spec.shape, spec.seed)
            : new Tripwire(
                spec,
                () => coordinator.status().step,
                2,
                () => {
                  if (victim) return;
                  victim = node;
                  tripped();
                },
              ),
      });
      nodes.push(node);
    }
    const outcome = await Promise.race([
      midStep.then(() => 'tripped'),
      coordinator.finished.then(() => 'done'),
    ]);
    expect(outcome, 'the node was to leave mid-step').toBe('tripped');
    const left = victim as NodeRuntime | null;
    await left!.stop();
    await coordinator.finished;
    await Promise.all(nodes.map((n) => n.stop()));
    const status = coordinator.status();
    const metrics = await (await fetch(`http://127.0.0.1:${coordinator.port}/metrics`)).text();
    // The step it left in still wrote its checkpoint, from the replica that stayed.
    const checkpoint = coordinator.store.latestCheckpoint()?.step;
    await coordinator.close();

    expect(events.map((e) => e.step)).toEqual([1, 2, 3, 4]);
    expect(checkpoint).toBe(4);
    const rerouted = /^tributary_reroutes_total 1$/m.test(metrics);
    if (dataPlane === 'relay' || rerouted) {
      // Rerouted, not replayed: every step took one attempt.
      expect(rerouted).toBe(true);
      expect(events.map((e) => e.attempts)).toEqual([1, 1, 1, 1]);
    } else {
      // Peer to peer, a tensor of it may have been on its way to a neighbour, which nothing would tell:
      // that step is replayed instead (once).
      expect(events.map((e) => e.attempts).sort()).toEqual([1, 1, 1, 2]);
    }
    console.log(`${dataPlane}, stage ${stageNumber}: ${rerouted ? 'rerouted' : 'replayed'}`);
    // Each (step, stage, micro-batch) is credited once, to whoever's gradient reached the weights.
    expect(status.receipts).toBe(4 * 2 * 8);
    const trainer = await singleProcess(
      config,
      Corpus.fromFile(corpusPath),
      (range) => new CpuStage(config.model, range, config.microBatch, config.seed),
    );
    const single: number[] = [];
    for (let step = 0; step < config.steps; step++) single.push(await trainer.trainStep(step));
    trainer.destroy();
    // The replica accumulates the redone micro-batches in another order: equal up to float rounding.
    events.forEach((e, i) => expect(Math.abs(e.loss - single[i]!) / single[i]!).toBeLessThan(1e-4));
  },
);
