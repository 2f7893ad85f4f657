import { openCompression } from '../../gpu/codec/run-compression.js';
import { gpuSubspaceOptions } from '../../gpu/codec/subspace-stage.js';
import { acquireDevice } from '../../gpu/device/acquire.js';
import {
  type TuningStore,
  matmulOptions,
  modelProducts,
  tuneMatmul,
  tuningLogLine,
} from '../../gpu/engine/autotune.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import type { StageSpec } from '../node/stage-factory.js';
import {
  STAGE_METHODS,
  type GpuWorkerMessage,
  type GpuWorkerReply,
  type GpuWorkerRequest,
} from './protocol.js';

/** The part of a MessagePort the loop uses. */
export interface PortLike {
  postMessage(message: GpuWorkerMessage, transfer: Transferable[]): void;
  addEventListener(type: 'message', listener: (event: MessageEvent<GpuWorkerRequest>) => void): void;
  start(): void;
}

const NO_WEBGPU_HINT =
  'This window has no navigator.gpu: the GPU may be blocklisted by Chromium, or WebGPU is disabled.';

interface Engine {
  device: GPUDevice;
  /** Built with the first stage, once the matmul is tuned on that stage's products. */
  kernels: KernelSet | null;
  stage: StageTrainer | null;
}

/**
 * Tunes the matmul on `device` for the first stage's products, as the node's engine thread does
 * (main/node/stage-factory.ts), against the cache text main sent; returns the kernels, the log lines and the
 * cache's new text when the tuning wrote one.
 */
async function tunedKernels(
  device: GPUDevice,
  spec: StageSpec,
  cacheText: string | null,
): Promise<{ kernels: KernelSet; log: string[]; tuningCache: string | null }> {
  const log: string[] = [];
  let tuningCache: string | null = null;
  const store: TuningStore = {
    read: () => Promise.resolve(cacheText),
    write: (text) => {
      tuningCache = text;
      return Promise.resolve();
    },
  };
  const tuned = await tuneMatmul(device, {
    products: modelProducts(spec.config, spec.shape),
    store,
    log: (line) => log.push(line),
  });
  log.push(tuningLogLine(tuned));
  return { kernels: new KernelSet(device, { matmul: matmulOptions(tuned.tuning) }), log, tuningCache };
}

/**
 * Serves main's requests on one port: acquires the device, builds the stage (gpu/engine GpuStage) and runs
 * its StageTrainer calls. Requests run strictly in arrival order, so main may fire zeroGrad() and go on.
 */
export function serveGpuPort(port: PortLike, gpu: GPU | undefined): void {
  let engine: Engine | null = null;
  let queue: Promise<void> = Promise.resolve();

  const need = (): Engine => {
    if (!engine) throw new Error('no device: send "acquire" first');
    return engine;
  };
  const release = (): void => {
    engine?.stage?.destroy();
    engine?.device.destroy();
    engine = null;
  };

  const acquire = async (id: number): Promise<GpuWorkerReply> => {
    if (!gpu) return { id, type: 'error', message: NO_WEBGPU_HINT };
    release();
    const acquired = await acquireDevice(gpu, NO_WEBGPU_HINT);
    const { device } = acquired;
    engine = { device, kernels: null, stage: null };
    void device.lost.then((info) => {
      if (engine?.device === device) engine = null;
      // destroy() by release is expected; anything else is Chromium's GPU process going away.
      if (info.reason !== 'destroyed') {
        port.postMessage({ type: 'device-lost', reason: info.reason, message: info.message }, []);
      }
    });
    return {
      id,
      type: 'acquired',
      adapter: acquired.summary,
      limits: {
        maxBufferSize: device.limits.maxBufferSize,
        maxStorageBufferBindingSize: device.limits.maxStorageBufferBindingSize,
        maxComputeWorkgroupStorageSize: device.limits.maxComputeWorkgroupStorageSize,
      },
    };
  };

  const handle = async (request: GpuWorkerRequest): Promise<GpuWorkerReply> => {
    const { id } = request;
    switch (request.type) {
      case 'acquire':
        return acquire(id);
      case 'release':
        release();
        return { id, type: 'released' };
      case 'echo':
        return { id, type: 'echo', tensors: request.tensors };
      case 'create-stage': {
        const current = need();
        current.stage?.destroy();
        current.stage = null;
        const { config, range, shape, seed, compression } = request.spec;
        const tuning = current.kernels
          ? { kernels: current.kernels, log: [], tuningCache: null }
          : await tunedKernels(current.device, request.spec, request.tuningCache ?? null);
        current.kernels = tuning.kernels;
        const constraint = compression
          ? openCompression(compression, config, seed, range.count).constraint
          : null;
        current.stage = await GpuStage.create(current.device, config, range, shape, {
          seed,
          kernels: current.kernels,
          ...(constraint ? gpuSubspaceOptions(current.device, config, range, constraint) : {}),
        });
        return {
          id,
          type: 'stage-created',
          paramCount: current.stage.paramCount,
          log: tuning.log,
          tuningCache: tuning.tuningCache,
        };
      }
      case 'stage-call': {
        const stage = need().stage;
        if (!stage) throw new Error('no stage: send "create-stage" first');
        if (!STAGE_METHODS.includes(request.method)) throw new Error(`not a stage method: ${request.method}`);
        const method = stage[request.method] as (...args: unknown[]) => unknown;
        return { id, type: 'stage-result', result: await method.apply(stage, request.args) };
      }
    }
  };

  port.addEventListener('message', (event) => {
    const request = event.data;
    queue = queue.then(async () => {
      let reply: GpuWorkerReply;
      try {
        reply = await handle(request);
      } catch (error) {
        reply = {
          id: request.id,
          type: 'error',
          message: error instanceof Error ? error.message : String(error),
        };
      }
      // Echoed tensors belong to the message and can move; stage results may be views of buffers the stage
      // keeps for its backward pass, so those are copied.
      const transfer = reply.type === 'echo' ? reply.tensors.map((t) => t.buffer as ArrayBuffer) : [];
      port.postMessage(reply, transfer);
    });
  });
  port.start();
  port.postMessage({ type: 'ready', hasWebGpu: gpu !== undefined }, []);
}
