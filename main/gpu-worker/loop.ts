import { requestAdapter, summarizeAdapter } from '../../gpu/device/acquire.js';
import type { GpuWorkerMessage, GpuWorkerReply, GpuWorkerRequest } from './protocol.js';

/** The part of a MessagePort the loop uses. */
export interface PortLike {
  postMessage(message: GpuWorkerMessage, transfer: Transferable[]): void;
  addEventListener(type: 'message', listener: (event: MessageEvent<GpuWorkerRequest>) => void): void;
  start(): void;
}

const NO_WEBGPU_HINT =
  'This window has no navigator.gpu: the GPU may be blocklisted by Chromium, or WebGPU is disabled.';

/**
 * Serves main's requests on one port: acquires and releases the device and reports what it got. The engine's
 * stage trainer (gpu/stage/types.ts StageTrainer) is meant to run on the device acquired here.
 */
export function serveGpuPort(port: PortLike, gpu: GPU | undefined): void {
  let device: GPUDevice | null = null;

  const acquire = async (id: number): Promise<GpuWorkerReply> => {
    if (!gpu) return { id, type: 'error', message: NO_WEBGPU_HINT };
    const adapter = await requestAdapter(gpu, NO_WEBGPU_HINT);
    device?.destroy();
    const acquired = await adapter.requestDevice({
      requiredLimits: {
        maxBufferSize: adapter.limits.maxBufferSize,
        maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      },
    });
    device = acquired;
    void acquired.lost.then((info) => {
      if (device === acquired) device = null;
      // destroy() by release is expected; anything else is Chromium's GPU process going away.
      if (info.reason !== 'destroyed')
        port.postMessage({ type: 'device-lost', reason: info.reason, message: info.message }, []);
    });
    return {
      id,
      type: 'acquired',
      adapter: summarizeAdapter(adapter),
      limits: {
        maxBufferSize: acquired.limits.maxBufferSize,
        maxStorageBufferBindingSize: acquired.limits.maxStorageBufferBindingSize,
        maxComputeWorkgroupStorageSize: acquired.limits.maxComputeWorkgroupStorageSize,
      },
    };
  };

  const handle = async (request: GpuWorkerRequest): Promise<void> => {
    let reply: GpuWorkerReply;
    try {
      if (request.type === 'acquire') reply = await acquire(request.id);
      else if (request.type === 'release') {
        device?.destroy();
        device = null;
        reply = { id: request.id, type: 'released' };
      } else reply = { id: request.id, type: 'echo', tensors: request.tensors };
    } catch (error) {
      reply = {
        id: request.id,
        type: 'error',
        message: error instanceof Error ? error.message : String(error),
      };
    }
    const transfer = reply.type === 'echo' ? reply.tensors.map((t) => t.buffer as ArrayBuffer) : [];
    port.postMessage(reply, transfer);
  };

  port.addEventListener('message', (event) => void handle(event.data));
  port.start();
  port.postMessage({ type: 'ready', hasWebGpu: gpu !== undefined }, []);
}
