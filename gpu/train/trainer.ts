/**
 * A whole-model trainer: every stage of a model chained in one process, generic over StageTrainer so the same
 * loop runs GpuStages (gpu/engine/gpu-stage.ts) and CpuStages (gpu/reference/cpu-stage.ts).
 *
 * API
 *   const trainer = await Trainer.create({
 *     config,                      // GptConfig
 *     stageCount: 2,               // the model is cut with splitBlocks(config, stageCount)
 *     shape: { batch, seq },       // one micro-batch
 *     microBatches: 4,             // micro-batches per optimizer step (gradient accumulation)
 *     adamw: { learningRate, beta1, beta2, eps, weightDecay },
 *     gradClip: 1,                 // global L2 norm limit; Infinity turns clipping off
 *     makeStage: (range) => GpuStage.create(device, config, range, shape, { seed }),
 *     onDeviceLost: async (err) => { device = await acquireDevice(...) },  // optional, see below
 *   });
 *   const { loss, gradNorm, clipScale, step } = await trainer.step(batches);  // batches.length === microBatches
 *   const states = await trainer.exportState();   // one StageState per stage, e.g. for checkpoints
 *   await trainer.importState(states);
 *   trainer.destroy();
 *
 * One step: zeroGrad on every stage; for each micro-batch, forward through the stages (tokens into the
 * first, targets into the last), then backward in reverse with lossScale = 1/microBatches, so gradients are
 * those of the mean loss; gradSquaredNorm summed over stages gives the global norm; AdamW with
 * clipScale = min(1, gradClip / norm). A NaN/Inf loss or gradient throws NonFiniteError before any update.
 * With `lossScaling` (mixed precision) backward uses lossScale = scale/microBatches and AdamW unscales by
 * clipScale/scale; NaN/Inf gradients then halve the scale and skip the step (`skipped`), see loss-scaler.ts.
 *
 * Device loss: with `onDeviceLost`, the trainer keeps the StageState of the last completed step on the host
 * (one readback of weights and moments per step). When a step fails with DeviceLostError it destroys the
 * stages, awaits onDeviceLost (the host acquires a new device there, so makeStage builds on it), builds the
 * stages again, imports the snapshot and runs the same step again, up to `maxRecoveries` times in a row.
 */
import { DeviceLostError } from '../device/lost.js';
import { splitBlocks, type GptConfig, type MicroBatchShape, type StageRange } from '../model/config.js';
import { NonFiniteError } from '../stage/checks.js';
import type { AdamWSettings, StageInput, StageState, StageTrainer } from '../stage/types.js';
import { LossScaler, type LossScaling } from './loss-scaler.js';

export interface MicroBatch {
  /** batch*seq token ids, the input. */
  tokens: Int32Array;
  /** batch*seq token ids, the next token at each position. */
  targets: Int32Array;
}

export interface TrainerOptions<S extends StageTrainer> {
  config: GptConfig;
  stageCount: number;
  shape: MicroBatchShape;
  microBatches: number;
  adamw: AdamWSettings;
  gradClip: number;
  makeStage: (range: StageRange) => Promise<S> | S;
  onDeviceLost?: (error: DeviceLostError) => Promise<void>;
  /** Consecutive recoveries allowed for one step before the error is passed on (default 2). */
  maxRecoveries?: number;
  /**
   * Dynamic loss scaling (mixed precision): backward differentiates scale * loss; a NaN/Inf gradient halves the
   * scale and skips the step instead of throwing, until the scale reaches its minimum. Off when absent.
   */
  lossScaling?: LossScaling;
}

export interface StepResult {
  /** Mean loss over the step's micro-batches (before the update). */
  loss: number;
  /** Global L2 norm of the gradients, before clipping. */
  gradNorm: number;
  clipScale: number;
  /** Steps completed, this one included. */
  step: number;
  /** Device losses recovered from during this step. */
  recoveries: number;
  /** The loss scale the step's backward used (1 without loss scaling). */
  lossScale: number;
  /** True when the gradients overflowed at that scale and no update was applied. */
  skipped: boolean;
}

export class Trainer<S extends StageTrainer> {
  private snapshot: StageState[] | null = null;
  private completed = 0;
  private readonly scaler: LossScaler | null;

  private constructor(
    private readonly options: TrainerOptions<S>,
    readonly ranges: StageRange[],
    private currentStages: S[],
  ) {
    this.scaler = options.lossScaling ? new LossScaler(options.lossScaling) : null;
  }

  static async create<S extends StageTrainer>(options: TrainerOptions<S>): Promise<Trainer<S>> {
    if (!Number.isInteger(options.microBatches) || options.microBatches < 1) {
      throw new Error(`microBatches must be a positive integer, got ${options.microBatches}`);
    }
    if (!(options.gradClip > 0))
      throw new Error(`gradClip must be positive (Infinity turns it off), got ${options.gradClip}`);
    const ranges = splitBlocks(options.config, options.stageCount);
    const trainer = new Trainer(options, ranges, await buildStages(options, ranges));
    if (options.onDeviceLost) trainer.snapshot = await trainer.exportState();
    return trainer;
  }

  get stages(): readonly S[] {
    return this.currentStages;
  }

  get stepsCompleted(): number {
    return this.completed;
  }

  async step(batches: readonly MicroBatch[]): Promise<StepResult> {
    if (batches.length !== this.options.microBatches) {
      throw new Error(`a step takes ${this.options.microBatches} micro-batches, got ${batches.length}`);
    }
    let recoveries = 0;
    for (;;) {
      try {
        const result = await this.runStep(batches);
        if (this.options.onDeviceLost) this.snapshot = await this.exportState();
        this.completed++;
        return { ...result, step: this.completed, recoveries };
      } catch (error) {
        const limit = this.options.maxRecoveries ?? 2;
        if (!(error instanceof DeviceLostError) || !this.options.onDeviceLost || recoveries >= limit)
          throw error;
        recoveries++;
        await this.recover(error);
      }
    }
  }

  exportState(): Promise<StageState[]> {
    return Promise.all(this.currentStages.map((s) => s.exportState()));
  }

  async importState(states: readonly StageState[]): Promise<void> {
    if (states.length !== this.currentStages.length)
      throw new Error(`expected ${this.currentStages.length} stage states, got ${states.length}`);
    for (let i = 0; i < states.length; i++) await this.currentStages[i]!.importState(states[i]!);
    if (this.options.onDeviceLost) this.snapshot = await this.exportState();
  }

  destroy(): void {
    for (const s of this.currentStages) s.destroy();
    this.currentStages = [];
  }

  private async runStep(batches: readonly MicroBatch[]): Promise<Omit<StepResult, 'step' | 'recoveries'>> {
    const stages = this.currentStages;
    for (const s of stages) s.zeroGrad();
    const mean = 1 / batches.length;
    const scale = this.scaler?.scale ?? 1;
    let loss = 0;
    let sumSquares = 0;
    let inBackward = false;
    try {
      for (const mb of batches) {
        inBackward = false;
        let input: StageInput = { kind: 'tokens', tokens: mb.tokens };
        for (const stage of stages) {
          const out = await stage.forward(input, mb.targets);
          if (out.kind === 'loss') loss += out.loss * mean;
          else input = { kind: 'activations', data: out.data };
        }
        inBackward = true;
        let grad: Float32Array | null = null;
        for (let i = stages.length - 1; i >= 0; i--) grad = await stages[i]!.backward(grad, scale * mean);
      }
      for (const s of stages) sumSquares += await s.gradSquaredNorm();
      if (!Number.isFinite(sumSquares)) throw new NonFiniteError(`the global gradient norm is ${sumSquares}`);
    } catch (error) {
      // Non-finite gradients from a finite forward are an overflow of the scaled backward: skip and back off.
      if (!(error instanceof NonFiniteError) || !inBackward || !this.scaler?.overflow()) throw error;
      return { loss, gradNorm: NaN, clipScale: 0, lossScale: scale, skipped: true };
    }
    const gradNorm = Math.sqrt(sumSquares) / scale;
    const clipScale = gradNorm > this.options.gradClip ? this.options.gradClip / gradNorm : 1;
    for (const s of stages) await s.step(this.options.adamw, clipScale / scale);
    this.scaler?.cleanStep();
    return { loss, gradNorm, clipScale, lossScale: scale, skipped: false };
  }

  private async recover(error: DeviceLostError): Promise<void> {
    const snapshot = this.snapshot;
    if (!snapshot) throw error;
    for (const s of this.currentStages) s.destroy();
    this.currentStages = [];
    await this.options.onDeviceLost!(error);
    this.currentStages = await buildStages(this.options, this.ranges);
    for (let i = 0; i < snapshot.length; i++) await this.currentStages[i]!.importState(snapshot[i]!);
  }
}

async function buildStages<S extends StageTrainer>(
  options: TrainerOptions<S>,
  ranges: StageRange[],
): Promise<S[]> {
  const stages: S[] = [];
  try {
    for (const r of ranges) stages.push(await options.makeStage(r));
  } catch (error) {
    for (const s of stages) s.destroy();
    throw error;
  }
  return stages;
}
