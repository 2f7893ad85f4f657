import { CodecError, aligned, checkEncodeInput, checkPayload, type ActivationCodec } from './codec.js';

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
    checkPayload(int8Codec, payload, shape, direction);
    const rows = shape.batch * shape.seq;
    const C = shape.width;
    const buffer = aligned(payload, 4);
    const scales = new Float32Array(buffer, 0, rows);
    const q = new Int8Array(buffer, 4 * rows);
    const out = new Float32Array(rows * C);
    for (let r = 0; r < rows; r++) {
      const scale = scales[r]!;
      if (!(scale >= 0 && scale < Infinity)) throw new CodecError(`int8: row ${r} has the scale ${scale}`);
      for (let i = 0; i < C; i++) out[r * C + i] = q[r * C + i]! * scale;
    }
    return { data: out, tokens: null };
  },
  magnitudeBound(payload, shape, direction) {
    checkPayload(int8Codec, payload, shape, direction);
    const rows = shape.batch * shape.seq;
    const scales = new Float32Array(aligned(payload, 4), 0, rows);
    // A number is its byte (at most 128 in magnitude; an honest encoder writes at most 127) times its row's
    // scale: the scales alone bound every value, without reading the bytes.
    let most = 0;
    for (let r = 0; r < rows; r++) {
      const scale = scales[r]!;
      if (!(scale >= 0 && scale < Infinity)) throw new CodecError(`int8: row ${r} has the scale ${scale}`);
      if (scale > most) most = scale;
    }
    return 128 * most;
  },
};
