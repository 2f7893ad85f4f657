import {
  aligned,
  checkEncodeInput,
  checkPayload,
  type ActivationCodec,
  type BoundaryShape,
  type Direction,
} from './codec.js';

const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

/**
 * f32 -> IEEE binary16 bits, rounding to nearest even; overflow goes to Inf. Written out because Electron's
 * Node (22) has no Float16Array.
 */
export function toHalfBits(value: number): number {
  f32[0] = value;
  const x = u32[0]!;
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  const mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  const e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    const m = mant | 0x800000;
    const shift = 14 - e;
    const half = m >>> shift;
    const rest = m & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    return sign | (half + (rest > mid || (rest === mid && half & 1) ? 1 : 0));
  }
  const half = (e << 10) | (mant >>> 13);
  const rest = mant & 0x1fff;
  return sign | (half + (rest > 0x1000 || (rest === 0x1000 && half & 1) ? 1 : 0));
}

export function fromHalfBits(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >>> 10) & 0x1f;
  const mant = h & 0x3ff;
  if (exp === 0) return sign * mant * 2 ** -24;
  if (exp === 0x1f) return mant ? Number.NaN : sign * Infinity;
  return sign * (1 + mant / 1024) * 2 ** (exp - 15);
}

/** A payload's binary16 bit patterns, once its length is checked. */
function halves(payload: Uint8Array, shape: BoundaryShape, direction: Direction): Uint16Array {
  checkPayload(fp16Codec, payload, shape, direction);
  return new Uint16Array(aligned(payload, 2));
}

/** IEEE half precision: 2 bytes a number, relative error at most 2^-11 in the normal range (6e-5 to 65504). */
export const fp16Codec: ActivationCodec = {
  name: 'fp16',
  payloadBytes: (s) => 2 * s.batch * s.seq * s.width,
  encode(x, shape) {
    checkEncodeInput('fp16', x, shape);
    const half = new Uint16Array(x.length);
    for (let i = 0; i < x.length; i++) half[i] = toHalfBits(x[i]!);
    return new Uint8Array(half.buffer);
  },
  decode(payload, shape, direction) {
    const half = halves(payload, shape, direction);
    const out = new Float32Array(half.length);
    for (let i = 0; i < half.length; i++) out[i] = fromHalfBits(half[i]!);
    return { data: out, tokens: null };
  },
  magnitudeBound(payload, shape, direction) {
    const half = halves(payload, shape, direction);
    // With the sign bit cleared, binary16 bit patterns order as their magnitudes do: the largest pattern
    // is the largest magnitude, exactly, and an exponent of all ones is Inf or NaN.
    let most = 0;
    for (let i = 0; i < half.length; i++) {
      const m = half[i]! & 0x7fff;
      if (m > most) most = m;
    }
    return most >= 0x7c00 ? Infinity : fromHalfBits(most);
  },
};
