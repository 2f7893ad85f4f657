import { decodeBoundary } from './codec-tensor.js';
import type { ActivationCodec, Direction } from './codec.js';
import type { Tensor } from './frame.js';

/*
 * Checks on the values of tensors that cross between stages: the coordinator applies them to what it relays
 * or is summarised, a node to what a peer sends it directly. One implementation, so both refuse the same.
 */

/**
 * Magnitudes no honest stage produces: a tiny GPT's residual stream, gradients, weights and AdamW moments
 * stay many orders of magnitude below this. Beyond it a value is a fault or an attack, never training.
 */
export const ABSURD_MAGNITUDE = 1e6;

/**
 * The limit for gradients, which mixed precision's loss scale multiplies (up to 2^24): honest values times
 * the scale. Activations are never scaled.
 */
export function gradientLimit(lossScale: number): number {
  return ABSURD_MAGNITUDE * lossScale;
}

/** The limit for a boundary tensor going `direction` at this loss scale: only gradients carry the scale. */
export function boundaryLimit(direction: Direction, lossScale: number): number {
  return direction === 'backward' ? gradientLimit(lossScale) : ABSURD_MAGNITUDE;
}

/** What is wrong with a block of numbers (the first bad one), or null. */
export function valuesProblem(what: string, data: Float32Array, limit = ABSURD_MAGNITUDE): string | null {
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    if (!Number.isFinite(x)) return `sent ${what} holding ${x} (index ${i})`;
    if (Math.abs(x) > limit) return `sent ${what} holding ${x} (index ${i}), beyond any honest value`;
  }
  return null;
}

/** A sender's own account of a tensor the coordinator does not see. */
export interface ValuesSummary {
  finite: boolean;
  /** Largest magnitude (0 when not finite). */
  maxAbs: number;
}

/** The summary of `data`, and the sum of its squares (in float64, as the coordinator sums norms). */
export function summarizeValues(data: Float32Array): ValuesSummary & { squaredSum: number } {
  let maxAbs = 0;
  let squaredSum = 0;
  for (let i = 0; i < data.length; i++) {
    const x = data[i]!;
    const a = Math.abs(x);
    if (!Number.isFinite(a)) return { finite: false, maxAbs: 0, squaredSum: 0 };
    if (a > maxAbs) maxAbs = a;
    squaredSum += x * x;
  }
  return { finite: true, maxAbs, squaredSum };
}

/** What a summary says is wrong with the `what` it describes, as valuesProblem would say of the values. */
export function summaryProblem(
  what: string,
  summary: ValuesSummary,
  limit = ABSURD_MAGNITUDE,
): string | null {
  if (!summary.finite) return `sent ${what} holding non-finite values`;
  if (summary.maxAbs > limit) return `sent ${what} holding ${summary.maxAbs}, beyond any honest value`;
  return null;
}

/** The sender's own summary of a tensor it sent peer to peer (the coordinator never sees the values). */
export function sentProblem(sent: ValuesSummary | undefined, limit = ABSURD_MAGNITUDE): string | null {
  if (!sent) return 'sent a tensor peer to peer without its summary';
  return summaryProblem('a boundary tensor', sent, limit);
}

/** Activations (forward) or their gradients (backward) as they cross a boundary, decoded when compressed. */
export function boundaryProblem(
  run: { codec: ActivationCodec; shape: { batch: number; seq: number }; model: { width: number } },
  tensor: Tensor,
  direction: Direction,
  limit = ABSURD_MAGNITUDE,
): string | null {
  const shape = { ...run.shape, width: run.model.width };
  const what = direction === 'forward' ? 'activations' : 'activation gradients';
  if (run.codec.magnitudeBound) {
    let bound: number;
    try {
      bound = run.codec.magnitudeBound(tensor.data as Uint8Array, shape, direction);
    } catch (err) {
      return `sent ${what} that do not decode: ${(err as Error).message}`;
    }
    if (!Number.isFinite(bound)) return `sent ${what} holding non-finite values`;
    // A bound past the limit refuses what decoding might have let through only where an honest stage's
    // values would already be many orders of magnitude away from it.
    return bound > limit ? `sent ${what} that may hold ${bound}, beyond any honest value` : null;
  }
  let decoded: Float32Array;
  try {
    decoded = decodeBoundary(run.codec, tensor, shape, direction).data;
  } catch (err) {
    return `sent ${what} that do not decode: ${(err as Error).message}`;
  }
  return valuesProblem(what, decoded, limit);
}
