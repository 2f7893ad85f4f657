import type { AdapterSummary } from '../../gpu/device/acquire.js';
import type { StageSpec } from '../node/stage-factory.js';

/**
 * Messages between Electron main and the hidden GPU worker page, over a MessagePort. Tensors travel as
 * Float32Array/Int32Array; the page transfers the buffers it owns, while main's MessagePortMain (which can
 * transfer only ports) has them copied.
 */

/** The window message with which the worker's preload hands the page its end of the port. */
export const GPU_PORT_MESSAGE = 'tributary:gpu-port';

/** The StageTrainer calls (gpu/stage/types.ts) main may make on the page's stage. */
export const STAGE_METHODS = [
  'forward',
  'backward',
  'zeroGrad',
  'gradSquaredNorm',
  'exportGrads',
  'importGrads',
  'step',
  'exportState',
  'importState',
] as const;
export type StageMethod = (typeof STAGE_METHODS)[number];

export type GpuWorkerRequest =
  | { id: number; type: 'acquire' }
  /** Destroys the stage and the device. */
  | { id: number; type: 'release' }
  /** Returns the tensors unchanged: proves the transfer path both ways (and its cost) without the engine. */
  | { id: number; type: 'echo'; tensors: (Float32Array | Int32Array)[] }
  /** Builds the one stage this page trains (replacing any other) on the acquired device. */
  | { id: number; type: 'create-stage'; spec: StageSpec }
  | { id: number; type: 'stage-call'; method: StageMethod; args: unknown[] };

export interface DeviceLimitsSummary {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
  maxComputeWorkgroupStorageSize: number;
}

export type GpuWorkerReply =
  | { id: number; type: 'acquired'; adapter: AdapterSummary; limits: DeviceLimitsSummary }
  | { id: number; type: 'released' }
  | { id: number; type: 'echo'; tensors: (Float32Array | Int32Array)[] }
  | { id: number; type: 'stage-created'; paramCount: number }
  | { id: number; type: 'stage-result'; result: unknown }
  | { id: number; type: 'error'; message: string };

/** Sent unasked: the page is listening; or Chromium's GPU process dropped the device (a lost device, not a crash). */
export type GpuWorkerEvent =
  { type: 'ready'; hasWebGpu: boolean } | { type: 'device-lost'; reason: string; message: string };

export type GpuWorkerMessage = GpuWorkerReply | GpuWorkerEvent;
