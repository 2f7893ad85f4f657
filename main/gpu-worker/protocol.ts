import type { AdapterSummary } from '../../gpu/device/acquire.js';

/**
 * Messages between Electron main and the hidden GPU worker page, over a MessagePort. Tensors travel as
 * Float32Array/Int32Array; the page transfers their buffers, while main's MessagePortMain (which can transfer
 * only ports) has them copied.
 */

/** The window message with which the worker's preload hands the page its end of the port. */
export const GPU_PORT_MESSAGE = 'tributary:gpu-port';

export type GpuWorkerRequest =
  | { id: number; type: 'acquire' }
  | { id: number; type: 'release' }
  /** Returns the tensors unchanged: proves the transfer path both ways (and its cost) without the engine. */
  | { id: number; type: 'echo'; tensors: (Float32Array | Int32Array)[] };

export interface DeviceLimitsSummary {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxComputeWorkgroupStorageSize: number;
}

export type GpuWorkerReply =
  | { id: number; type: 'acquired'; adapter: AdapterSummary; limits: DeviceLimitsSummary }
  | { id: number; type: 'released' }
  | { id: number; type: 'echo'; tensors: (Float32Array | Int32Array)[] }
  | { id: number; type: 'error'; message: string };

/** Sent unasked: the page is listening; or Chromium's GPU process dropped the device (a lost device, not a crash). */
export type GpuWorkerEvent =
  { type: 'ready'; hasWebGpu: boolean } | { type: 'device-lost'; reason: string; message: string };

export type GpuWorkerMessage = GpuWorkerReply | GpuWorkerEvent;
