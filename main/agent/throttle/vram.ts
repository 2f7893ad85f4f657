import type { GptConfig, MicroBatchShape, StageRange } from '../../../gpu/model/config.js';
import { formatBytes } from '../format.js';

/** The engine's estimate (gpu/engine's estimateStageMemoryBytes), injected so the agent does not depend on it. */
export type StageMemoryEstimator = (config: GptConfig, range: StageRange, shape: MicroBatchShape) => number;

export interface StageMemoryRequest {
  estimate: StageMemoryEstimator;
  config: GptConfig;
  range: StageRange;
  shape: MicroBatchShape;
}

/** Bytes a stage needs, from a number the runtime already knows or from the engine's estimator. */
export function stageMemoryBytes(request: number | StageMemoryRequest): number {
  const bytes =
    typeof request === 'number' ? request : request.estimate(request.config, request.range, request.shape);
  if (!Number.isFinite(bytes) || bytes < 0) throw new Error(`invalid stage memory estimate: ${bytes}`);
  return bytes;
}

export type VramCheck = { ok: true } | { ok: false; reason: string };

/** Whether a stage fits the user's device-memory cap (null = no cap) and the device's own memory, if known. */
export function checkVram(
  bytes: number,
  capMb: number | null,
  deviceTotalMb: number | null = null,
): VramCheck {
  if (capMb !== null && bytes > capMb * 1e6) {
    return {
      ok: false,
      reason: `this stage needs ${formatBytes(bytes)} of GPU memory, above your ${formatBytes(capMb * 1e6)} limit`,
    };
  }
  if (deviceTotalMb !== null && bytes > deviceTotalMb * 1e6) {
    return {
      ok: false,
      reason: `this stage needs ${formatBytes(bytes)} of GPU memory; the GPU has ${formatBytes(deviceTotalMb * 1e6)}`,
    };
  }
  return { ok: true };
}

/** What a node runtime asks before it allocates a stage (NodeRuntimeOptions.admitStage). */
export type StageAdmission = { ok: false; reason: string } | { ok: true; maxBytes?: number };

/**
 * Admits a stage only under the cap read at that moment (the dashboard may change it): a stage over it is
 * refused before the engine allocates anything, and one under it is built with the cap as the engine's
 * `maxBytes`, which re-checks against the device's own limits. `onStage` hears every estimate, so the policy
 * can pause with the reason.
 */
export function admitUnderCap(
  estimate: StageMemoryEstimator,
  capMb: () => number | null,
  onStage: (range: StageRange, bytes: number) => void = () => {},
): (range: StageRange, spec: { config: GptConfig; shape: MicroBatchShape }) => StageAdmission {
  return (range, { config, shape }) => {
    const bytes = stageMemoryBytes({ estimate, config, range, shape });
    onStage(range, bytes);
    const cap = capMb();
    const check = checkVram(bytes, cap);
    return check.ok ? { ok: true, maxBytes: cap === null ? undefined : cap * 1e6 } : check;
  };
}
