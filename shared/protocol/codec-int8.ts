import {
  CodecError,
  aligned,
  checkEncodeInput,
  checkPayload,
  type ActivationCodec,
  type BoundaryShape,
  type Direction,
} from './codec.js';

/** A payload's row scales and bytes, once its length is checked. */
function received(
  payload: Uint8Array,
  shape: BoundaryShape,
  direction: Direction,
): { rows: number; scales: Float32Array; q: Int8Array } {
  checkPayload(int8Codec, payload, shape, direction);
  const rows = shape.batch * shape.seq;
  const buffer = aligned(payload, 4);
  return { rows, scales: new Float32Array(buffer, 0, rows), q: new Int8Array(buffer, 4 * rows) };
}

/** Row `r`'s scale, refused unless finite and not negative (an encoder writes absmax / 127). */
function rowScale(scales: Float32Array, r: number): number {
  const scale = scales[r]!;
  if (!(scale >= 0 && scale < Infinity)) throw new CodecError(`int8: row ${r} has the scale ${scale}`);
  return scale;
}

/**
 * Per-token int8 with an absmax scale: each row sends its f32 scale (absmax / 127), then one signed byte a
 * number (round to nearest). The error of a number is at most half a step, absmax / 254 of its row.
 */
export const int8Codec: ActivationCodec = {
  name: 'int8',
  payloadBytes: (s) => s.batch * s.seq * (4 + s.width),
  encode(x, shape) {
    const rows = checkEncodeInput('int8', x, shape);
    const C = shape.width;
    const out = new Uint8Array(rows * (4 + C));
    const scales = new Float32Array(out.buffer, 0, rows);
    const q = new Int8Array(out.buffer, 4 * rows);
    for (let r = 0; r < rows; r++) {
      let absmax = 0;
      for (let i = 0; i < C; i++) absmax = Math.max(absmax, Math.abs(x[r * C + i]!));
      const scale = absmax / 127;
      scales[r] = scale;
      const inv = scale > 0 ? 1 / scale : 0;
      for (let i = 0; i < C; i++) q[r * C + i] = Math.round(x[r * C + i]! * inv);
    }
    return out;
  },
  decode(payload, shape, direction) {
    const { rows, scales, q } = received(payload, shape, direction);
    const C = shape.width;
    const out = new Float32Array(rows * C);
    for (let r = 0; r < rows; r++) {
      const scale = rowScale(scales, r);
      for (let i = 0; i < C; i++) out[r * C + i] = q[r * C + i]! * scale;
    }
    return { data: out, tokens: null };
  },
  magnitudeBound(payload, shape, direction) {
    const { rows, scales } = received(payload, shape, direction);
    // A number is its byte (at most 128 in magnitude; an honest encoder writes at most 127) times its row's
    // scale: the scales alone bound every value, without reading the bytes.
    let most = 0;
    for (let r = 0; r < rows; r++) most = Math.max(most, rowScale(scales, r));
    return 128 * most;
  },
};
