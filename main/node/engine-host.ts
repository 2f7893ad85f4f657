import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import type {
  AdamWSettings,
  StageForwardResult,
  StageInput,
  StageState,
  StageTrainer,
} from '../../gpu/stage/types.js';
import type { EncodedForwardResult, EncodedInput, EncodingStage } from '../../gpu/codec/device-boundary.js';
import type { CodecName } from '../../shared/protocol/codec.js';
import type { EngineKind } from '../../shared/protocol/messages.js';
import type { EngineCall, EngineLog, EngineMethod, EngineReply } from './engine-rpc.js';
import type { EngineHostOptions, StageSpec } from './stage-factory.js';

/**
 * Starts the worker entry next to this file: engine-worker.js in the build; engine-worker.ts when running
 * from sources (node --import tsx, vitest), where a small bootstrap registers tsx in the thread first.
 */
function startWorker(workerData: unknown): Worker {
  if (!import.meta.url.endsWith('.ts'))
    return new Worker(new URL('./engine-worker.js', import.meta.url), { workerData });
  const entry = new URL('./engine-worker.ts', import.meta.url).href;
  // require.resolve finds the CommonJS build of tsx's API; its ES module twin sits next to it.
  const tsxApi = pathToFileURL(
    createRequire(import.meta.url)
      .resolve('tsx/esm/api')
      .replace(/\.cjs$/, '.mjs'),
  ).href;
  const bootstrap = `import(${JSON.stringify(tsxApi)}).then((tsx) => { tsx.register(); return import(${JSON.stringify(entry)}); })`;
  return new Worker(bootstrap, { eval: true, workerData });
}

/**
 * A StageTrainer whose engine runs in a worker thread, so the node's event loop never waits on the GPU. When
 * the engine's stage encodes its own boundary (EncodingStage), so does this one: `boundaryCodec` is set.
 */
export class WorkerStage implements StageTrainer, Partial<EncodingStage> {
  private nextId = 0;
  private readonly pending = new Map<number, { resolve(v: unknown): void; reject(e: Error): void }>();
  private failure: Error | null = null;
  paramCount = 0;
  stashCapacity = 1;
  boundaryCodec?: CodecName;

  private constructor(
    private readonly worker: Worker,
    readonly config: GptConfig,
    readonly range: StageRange,
    readonly shape: MicroBatchShape,
    onLog: (line: string) => void,
  ) {
    worker.on('message', (reply: EngineReply | EngineLog) => {
      if ('log' in reply) {
        onLog(reply.log);
        return;
      }
      const p = this.pending.get(reply.id);
      this.pending.delete(reply.id);
      if (reply.ok) p?.resolve(reply.result);
      else p?.reject(Object.assign(new Error(reply.error), { name: reply.name ?? 'Error' }));
    });
    const fail = (err: Error): void => {
      // Keep the first cause: an uncaught error is followed by an exit that would hide it.
      this.failure ??= err;
      for (const p of this.pending.values()) p.reject(this.failure);
      this.pending.clear();
    };
    worker.on('error', fail);
    worker.on('exit', (code) => fail(new Error(`engine thread exited with code ${code}`)));
  }

  /** `host.log` receives the engine thread's log lines (the matmul tuning it chose). */
  static async create(
    engine: EngineKind,
    spec: StageSpec,
    host: EngineHostOptions = {},
  ): Promise<WorkerStage> {
    const worker = startWorker({ engine, tuningCachePath: host.tuningCachePath });
    const stage = new WorkerStage(worker, spec.config, spec.range, spec.shape, host.log ?? (() => {}));
    try {
      const created = (await stage.call('create', spec)) as {
        paramCount: number;
        stashCapacity: number;
        boundaryCodec?: CodecName;
      };
      stage.paramCount = created.paramCount;
      stage.stashCapacity = created.stashCapacity;
      if (created.boundaryCodec) stage.boundaryCodec = created.boundaryCodec;
    } catch (err) {
      await worker.terminate();
      throw err;
    }
    return stage;
  }

  private call(method: EngineMethod, args?: unknown): Promise<unknown> {
    if (this.failure) return Promise.reject(this.failure);
    const id = ++this.nextId;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, method, args } satisfies EngineCall);
    });
  }

  forward(input: StageInput, targets?: Int32Array): Promise<StageForwardResult> {
    return this.call('forward', [input, targets]) as Promise<StageForwardResult>;
  }

  backward(gradOut: Float32Array | null, lossScale: number): Promise<Float32Array | null> {
    return this.call('backward', [gradOut, lossScale]) as Promise<Float32Array | null>;
  }

  forwardEncoded(input: EncodedInput, targets?: Int32Array): Promise<EncodedForwardResult> {
    return this.call('forwardEncoded', [input, targets]) as Promise<EncodedForwardResult>;
  }

  backwardEncoded(gradOut: Uint8Array | null, lossScale: number): Promise<Uint8Array | null> {
    return this.call('backwardEncoded', [gradOut, lossScale]) as Promise<Uint8Array | null>;
  }

  async stash(id: number): Promise<void> {
    await this.call('stash', id);
  }

  async restore(id: number): Promise<void> {
    await this.call('restore', id);
  }

  zeroGrad(): void {
    this.call('zeroGrad').catch(() => {});
  }

  gradSquaredNorm(): Promise<number> {
    return this.call('gradSquaredNorm') as Promise<number>;
  }

  exportGrads(): Promise<Float32Array> {
    return this.call('exportGrads') as Promise<Float32Array>;
  }

  async importGrads(grads: Float32Array): Promise<void> {
    await this.call('importGrads', grads);
  }

  async step(settings: AdamWSettings, clipScale: number): Promise<void> {
    await this.call('step', [settings, clipScale]);
  }

  exportState(): Promise<StageState> {
    return this.call('exportState') as Promise<StageState>;
  }

  async importState(state: StageState): Promise<void> {
    await this.call('importState', state);
  }

  destroy(): void {
    this.call('destroy')
      .catch(() => {})
      .finally(() => void this.worker.terminate());
  }
}
