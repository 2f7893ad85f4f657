import {
  isFirstStage,
  isLastStage,
  type GptConfig,
  type MicroBatchShape,
  type StageRange,
} from '../../gpu/model/config.js';
import { stageParamCount } from '../../gpu/model/params.js';
import type { StageForwardResult, StageInput, StageState, StageTrainer } from '../../gpu/stage/types.js';

/** One stretch of compute on a stage, in performance.now() milliseconds. */
export interface BusyInterval {
  start: number;
  end: number;
}

const sleep = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/**
 * A stage whose compute is a timed wait: forward takes `forwardMs`, backward `backwardMs`, using no CPU, so
 * four stages on two cores show the schedule rather than the cores. Tensors have the real shapes (zeros), so
 * frames, validation and transfers are real. It stashes any number of micro-batches (it holds nothing).
 */
export class TimedStage implements StageTrainer {
  readonly paramCount: number;
  readonly stashCapacity = 64;
  private state: StageState | null = null;

  constructor(
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    private readonly forwardMs: number,
    private readonly backwardMs: number,
    /** Where each forward's and backward's span is recorded. */
    readonly busy: BusyInterval[] = [],
  ) {
    this.paramCount = stageParamCount(config, range);
  }

  private async compute(ms: number): Promise<void> {
    const start = performance.now();
    await sleep(ms);
    this.busy.push({ start, end: performance.now() });
  }

  private activations(): Float32Array {
    return new Float32Array(this.shape.batch * this.shape.seq * this.config.width);
  }

  async forward(_input: StageInput, _targets?: Int32Array): Promise<StageForwardResult> {
    await this.compute(this.forwardMs);
    return isLastStage(this.range)
      ? { kind: 'loss', loss: 5 }
      : { kind: 'activations', data: this.activations() };
  }

  async backward(_gradOut: Float32Array | null, _lossScale: number): Promise<Float32Array | null> {
    await this.compute(this.backwardMs);
    return isFirstStage(this.range) ? null : this.activations();
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
