import { expect } from 'vitest';
import { mulberry32 } from '../../gpu/model/params.js';

/** Uniform values in [-scale, scale), reproducible from the seed. */
export function randomF64(n: number, seed: number, scale = 1): Float64Array {
  const rand = mulberry32(seed);
  const out = new Float64Array(n);
  for (let i = 0; i < n; i++) out[i] = (2 * rand() - 1) * scale;
  return out;
}

export function randomTokens(n: number, vocab: number, seed: number): Int32Array {
  const rand = mulberry32(seed);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = Math.floor(rand() * vocab);
  return out;
}

export function dot(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let acc = 0;
  for (let i = 0; i < a.length; i++) acc += a[i]! * b[i]!;
  return acc;
}

export interface Tolerance {
  atol: number;
  rtol: number;
}

/**
 * Compares an analytic gradient of `loss` w.r.t. `x` with f64 central differences, at every index (or the
 * given ones). `loss` must read `x` afresh each call; `x` is restored afterwards.
 */
export function expectGradMatches(
  label: string,
  x: Float64Array,
  analytic: ArrayLike<number>,
  loss: () => number,
  tol: Tolerance,
  indices?: readonly number[],
  h = 1e-5,
): void {
  const idx = indices ?? Array.from({ length: x.length }, (_, i) => i);
  let worst = 0;
  for (const i of idx) {
    const orig = x[i]!;
    x[i] = orig + h;
    const plus = loss();
    x[i] = orig - h;
    const minus = loss();
    x[i] = orig;
    const numeric = (plus - minus) / (2 * h);
    const err = Math.abs(analytic[i]! - numeric) - (tol.atol + tol.rtol * Math.abs(numeric));
    worst = Math.max(worst, err);
    if (err > 0) {
      expect.fail(
        `${label}[${i}]: analytic ${analytic[i]} vs numeric ${numeric} (atol ${tol.atol}, rtol ${tol.rtol})`,
      );
    }
  }
  expect(worst).toBeLessThanOrEqual(0);
}
