import { checkEncodeInput, checkPayload, type ActivationCodec } from './codec.js';

/** fp32 as it is: 4 bytes a number, exact. */
export const noneCodec: ActivationCodec = {
  name: 'none',
  payloadBytes: (s) => 4 * s.batch * s.seq * s.width,
  encode(x, shape) {
    checkEncodeInput('none', x, shape);
    return new Uint8Array(x.buffer, x.byteOffset, x.byteLength).slice();
  },
  decode(payload, shape, direction) {
    checkPayload(noneCodec, payload, shape, direction);
    return { data: new Float32Array(payload.slice().buffer), tokens: null };
  },
};
