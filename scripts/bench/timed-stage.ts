import {
  isFirstStage,
  isLastStage,
  type GptConfig,
  type MicroBatchShape,
  type StageRange,
} from '../../gpu/model/config.js';
import { mulberry32, stageParamCount } from '../../gpu/model/params.js';
import type { StageForwardResult, StageInput, StageState, StageTrainer } from '../../gpu/stage/types.js';

/** One stretch of compute on a stage, in performance.now() milliseconds. */
export interface BusyInterval {
  start: number;
  end: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * What a timed stage's boundary tensors hold: zeros, or noise of a residual stream's scale forward (uniform in
 * [-1, 1)) and a gradient's backward (1e-3 of that), so that a codec encodes numbers as it would in training
 * (fp16's encode, for one, takes a shortcut on zeros).
 */
export type TimedValues = 'zeros' | 'noise';

/**
 * A stage whose compute is a timed wait: forward takes `forwardMs`, backward `backwardMs`, using no CPU, so
 * four stages on two cores show the schedule rather than the cores. Tensors have the real shapes (zeros
 * unless `values` says noise), so frames, validation and transfers are real. It stashes any number of
 * micro-batches (it holds nothing).
 */
export class TimedStage implements StageTrainer {
  readonly paramCount: number;
  readonly stashCapacity = 64;
  private state: StageState | null = null;
  private noise: { forward: Float32Array; backward: Float32Array } | null = null;

  constructor(
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    private readonly forwardMs: number,
    private readonly backwardMs: number,
    /** Where each forward's and backward's span is recorded. */
    readonly busy: BusyInterval[] = [],
    private readonly values: TimedValues = 'zeros',
  ) {
    this.paramCount = stageParamCount(config, range);
  }

  private async compute(ms: number): Promise<void> {
    const start = performance.now();
    await sleep(ms);
    this.busy.push({ start, end: performance.now() });
  }

  /** A fresh array each call, as a real engine's readback is. */
  private activations(direction: 'forward' | 'backward'): Float32Array {
    const n = this.shape.batch * this.shape.seq * this.config.width;
    if (this.values === 'zeros') return new Float32Array(n);
    if (!this.noise) {
      const rand = mulberry32(this.range.index + 1);
      const forward = Float32Array.from({ length: n }, () => rand() * 2 - 1);
      this.noise = { forward, backward: forward.map((x) => x * 1e-3) };
    }
    return this.noise[direction].slice();
  }

  async forward(_input: StageInput, _targets?: Int32Array): Promise<StageForwardResult> {
    await this.compute(this.forwardMs);
    return isLastStage(this.range)
      ? { kind: 'loss', loss: 5 }
      : { kind: 'activations', data: this.activations('forward') };
  }

  async backward(_gradOut: Float32Array | null, _lossScale: number): Promise<Float32Array | null> {
    await this.compute(this.backwardMs);
    return isFirstStage(this.range) ? null : this.activations('backward');
  }

  async stash(): Promise<void> {}
  async restore(): Promise<void> {}
  zeroGrad(): void {}

  async gradSquaredNorm(): Promise<number> {
    return 0;
  }

  async exportGrads(): Promise<Float32Array> {
    return new Float32Array(this.paramCount);
  }

  async importGrads(): Promise<void> {}
  async step(): Promise<void> {
    if (this.state) this.state = { ...this.state, step: this.state.step + 1 };
  }

  async exportState(): Promise<StageState> {
    if (!this.state) throw new Error('no state was imported');
    return this.state;
  }

  async importState(state: StageState): Promise<void> {
    this.state = state;
  }

  destroy(): void {}
}
