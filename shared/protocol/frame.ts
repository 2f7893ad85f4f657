/**
 * Binary tensor frames. Layout, little-endian:
 *   0  magic "TRBF"          4 bytes
 *   4  frame version (1)     u8
 *   5  dtype                 u8   (1 = f32, 2 = i32)
 *   6  codec                 u8   (codec.ts: 0 = none, 1 = fp16, 2 = int8, 3 = subspace)
 *   7  rank                  u8   (1..4)
 *   8  message id            u32  (the id of the JSON message the tensor belongs to)
 *  12  tensor index          u32  (position among that message's tensors)
 *  16  dims                  rank x u32
 *  ..  payload               codec none: product(dims) x 4 bytes; others: as the codec lays it out
 * dtype and dims describe the tensor before encoding; a codec's payload length is checked by the receiver,
 * which knows the codec its run uses (wire.ts), and decoded only by the node that consumes it.
 */
import { codecCodes, type CodecName } from './codec.js';

export type DType = 'f32' | 'i32';

export interface Tensor {
  dtype: DType;
  shape: number[];
  /** The numbers (codec none), or the codec's payload bytes. */
  data: Float32Array | Int32Array | Uint8Array;
  /** Absent means none. */
  codec?: CodecName;
}

export interface FrameHeader {
  messageId: number;
  index: number;
  dtype: DType;
  codec: CodecName;
  shape: number[];
}

export interface FrameLimits {
  /** Largest frame in bytes, header included. */
  maxBytes: number;
  maxRank: number;
}

export const defaultFrameLimits: FrameLimits = { maxBytes: 64 * 1024 * 1024, maxRank: 4 };

const MAGIC = 0x46425254; // "TRBF" read as a little-endian u32
const FRAME_VERSION = 1;
const HEADER_BYTES = 16;
const dtypeCodes: Record<DType, number> = { f32: 1, i32: 2 };

export class FrameError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'FrameError';
  }
}

export function encodeFrame(messageId: number, index: number, tensor: Tensor): Uint8Array {
  const elements = tensor.shape.reduce((a, b) => a * b, 1);
  const codec = tensor.codec ?? 'none';
  if ((codec === 'none') !== !(tensor.data instanceof Uint8Array)) {
    throw new FrameError(`codec ${codec} with a ${tensor.data.constructor.name} payload`);
  }
  if (codec === 'none' && elements !== tensor.data.length) {
    throw new FrameError(
      `tensor shape [${tensor.shape.join(', ')}] does not hold ${tensor.data.length} elements`,
    );
  }
  const headerBytes = HEADER_BYTES + 4 * tensor.shape.length;
  const out = new Uint8Array(headerBytes + tensor.data.byteLength);
  const view = new DataView(out.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint8(4, FRAME_VERSION);
  view.setUint8(5, dtypeCodes[tensor.dtype]);
  view.setUint8(6, codecCodes[codec]);
  view.setUint8(7, tensor.shape.length);
  view.setUint32(8, messageId, true);
  view.setUint32(12, index, true);
  tensor.shape.forEach((d, i) => view.setUint32(HEADER_BYTES + 4 * i, d, true));
  out.set(new Uint8Array(tensor.data.buffer, tensor.data.byteOffset, tensor.data.byteLength), headerBytes);
  return out;
}

function lookup<T extends string>(codes: Record<T, number>, code: number, what: string): T {
  const hit = (Object.keys(codes) as T[]).find((k) => codes[k] === code);
  if (hit === undefined) throw new FrameError(`unknown ${what} code ${code}`);
  return hit;
}

/** Parses a frame; throws FrameError on anything malformed. The payload is copied, so it is aligned. */
export function decodeFrame(
  bytes: Uint8Array,
  limits: FrameLimits = defaultFrameLimits,
): FrameHeader & { tensor: Tensor } {
  if (bytes.byteLength > limits.maxBytes) {
    throw new FrameError(`frame of ${bytes.byteLength} bytes exceeds the limit of ${limits.maxBytes}`);
  }
  if (bytes.byteLength < HEADER_BYTES)
    throw new FrameError(`frame of ${bytes.byteLength} bytes is shorter than its header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw new FrameError('frame does not start with the TRBF magic');
  const version = view.getUint8(4);
  if (version !== FRAME_VERSION) throw new FrameError(`unsupported frame version ${version}`);
  const dtype = lookup(dtypeCodes, view.getUint8(5), 'dtype');
  const codec = lookup(codecCodes, view.getUint8(6), 'codec');
  const rank = view.getUint8(7);
  if (rank < 1 || rank > limits.maxRank) throw new FrameError(`rank ${rank} is outside 1..${limits.maxRank}`);
  const headerBytes = HEADER_BYTES + 4 * rank;
  if (bytes.byteLength < headerBytes) throw new FrameError('frame is shorter than its dims');
  const shape: number[] = [];
  let elements = 1;
  for (let i = 0; i < rank; i++) {
    const d = view.getUint32(HEADER_BYTES + 4 * i, true);
    if (d === 0) throw new FrameError('a dimension is zero');
    elements *= d;
    shape.push(d);
  }
  const payload = bytes.byteLength - headerBytes;
  if (codec !== 'none') {
    if (dtype !== 'f32') throw new FrameError(`codec ${codec} carries f32 tensors only, not ${dtype}`);
    const header = {
      messageId: view.getUint32(8, true),
      index: view.getUint32(12, true),
      dtype,
      codec,
      shape,
    };
    return { ...header, tensor: { dtype, shape, data: bytes.slice(headerBytes), codec } };
  }
  if (elements * 4 !== payload) {
    throw new FrameError(
      `shape [${shape.join(', ')}] needs ${elements * 4} payload bytes, frame has ${payload}`,
    );
  }
  const copy = bytes.slice(headerBytes);
  const data = dtype === 'f32' ? new Float32Array(copy.buffer) : new Int32Array(copy.buffer);
  return {
    messageId: view.getUint32(8, true),
    index: view.getUint32(12, true),
    dtype,
    codec,
    shape,
    tensor: { dtype, shape, data },
  };
}
