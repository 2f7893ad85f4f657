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
  /**
   * Builds the one stage this page trains (replacing any other) on the acquired device. The first stage on
   * a device tunes the matmul kernels; the page has no file system, so main hands it the tuning cache's text
   * (gpu-tuning.json in the app's data directory) and saves what the reply brings back.
   */
  | { id: number; type: 'create-stage'; spec: StageSpec; tuningCache?: string | null }
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
  | {
      id: number;
      type: 'stage-created';
      paramCount: number;
      /** What the tuning said (the kernels chosen, cache entries ignored), for main's log; empty after the first stage. */
      log: string[];
      /** The tuning cache's new text when the tuning measured afresh, else null. */
      tuningCache: string | null;
    }
  | { id: number; type: 'stage-result'; result: unknown }
  | { id: number; type: 'error'; message: string };

/** Sent unasked: the page is listening; or Chromium's GPU process dropped the device (a lost device, not a crash). */
export type GpuWorkerEvent =
  { type: 'ready'; hasWebGpu: boolean } | { type: 'device-lost'; reason: string; message: string };

export type GpuWorkerMessage = GpuWorkerReply | GpuWorkerEvent;
