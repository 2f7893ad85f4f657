import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import type {
  AdamWSettings,
  StageForwardResult,
  StageInput,
  StageState,
  StageTrainer,
} from '../../gpu/stage/types.js';
import type { TuningStore } from '../../gpu/engine/autotune.js';
import type { StageSpec } from '../node/stage-factory.js';
import type { StageMethod } from '../gpu-worker/protocol.js';
import type { GpuWorkerClient } from './gpu-worker-client.js';

/**
 * A StageTrainer whose engine runs in the hidden GPU worker page, on Chromium's WebGPU: what the desktop app
 * hands the node runtime where plain Node would use a worker thread on dawn.node.
 */
export class GpuWorkerStage implements StageTrainer {
  private failure: Error | null = null;

  private constructor(
    private readonly client: GpuWorkerClient,
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    readonly paramCount: number,
  ) {}

  /**
   * Builds the stage in the page (which must have acquired its device). The page tunes the matmul for its
   * first stage: `tuning.store` (gpu-tuning.json in the app's data directory) is read for it and receives
   * what it measured, and `tuning.log` the kernels it chose.
   */
  static async create(
    client: GpuWorkerClient,
    spec: StageSpec,
    tuning: { store?: TuningStore; log?: (line: string) => void } = {},
  ): Promise<GpuWorkerStage> {
    const log = tuning.log ?? (() => {});
    const tuningCache = tuning.store
      ? await tuning.store.read().catch((error: unknown) => {
          log(`matmul tuning: ignoring the tuning cache, it cannot be read: ${(error as Error).message}`);
          return null;
        })
      : null;
    const reply = await client.request({ type: 'create-stage', spec, tuningCache });
    for (const line of reply.log) log(line);
    if (reply.tuningCache !== null && tuning.store) {
      await tuning.store.write(reply.tuningCache).catch((error: unknown) => {
        log(`matmul tuning: could not save the tuning cache: ${(error as Error).message}`);
      });
    }
    return new GpuWorkerStage(client, spec.config, spec.range, spec.shape, reply.paramCount);
  }

  private async call<T>(method: StageMethod, ...args: unknown[]): Promise<T> {
    if (this.failure) throw this.failure;
    const { result } = await this.client.request({ type: 'stage-call', method, args });
    return result as T;
  }

  forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult> {
    return this.call('forward', input, targets);
  }

  backward(gradOut: Float32Array | null, lossScale: number): Promise<Float32Array | null> {
    return this.call('backward', gradOut, lossScale);
  }

  /** Queued in the page ahead of the next call; a failure surfaces on that call. */
  zeroGrad(): void {
    this.call('zeroGrad').catch((error: unknown) => {
      this.failure = error instanceof Error ? error : new Error(String(error));
    });
  }

  gradSquaredNorm(): Promise<number> {
    return this.call('gradSquaredNorm');
  }

  exportGrads(): Promise<Float32Array> {
    return this.call('exportGrads');
  }

  importGrads(grads: Float32Array): Promise<void> {
    return this.call('importGrads', grads);
  }

  step(settings: AdamWSettings, clipScale: number): Promise<void> {
    return this.call('step', settings, clipScale);
  }

  exportState(): Promise<StageState> {
    return this.call('exportState');
  }

  importState(state: StageState): Promise<void> {
    return this.call('importState', state);
  }

  /** Frees the stage and its device in the page. */
  destroy(): void {
    this.client.request({ type: 'release' }).catch(() => undefined);
  }
}
