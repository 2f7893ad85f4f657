/**
 * Activation codecs: how a stage-boundary tensor (rows of `width` numbers, one row per token) travels in a
 * frame's payload. One interface, one module per codec (hivemind's `compression/` layout); the frame's codec
 * byte names the codec, and the receiver decodes only with the codec its run config chose.
 */
export const codecNames = ['none', 'fp16', 'int8', 'subspace'] as const;
export type CodecName = (typeof codecNames)[number];

/** The frame's codec byte for each codec; a byte not listed here is refused on arrival. */
export const codecCodes: Record<CodecName, number> = { none: 0, fp16: 1, int8: 2, subspace: 3 };

/** Activations go forward; their gradients go backward (the subspace codec sends token ids forward only). */
export type Direction = 'forward' | 'backward';

/** A boundary tensor's logical layout: batch x seq rows (tokens) of width numbers. */
export interface BoundaryShape {
  batch: number;
  seq: number;
  width: number;
}

export interface Decoded {
  data: Float32Array;
  /** The token id of each row, for codecs that carry them (subspace, forward); null otherwise. */
  tokens: Int32Array | null;
}

export interface ActivationCodec {
  readonly name: CodecName;
  /** Payload bytes of one boundary tensor; the receiver checks a frame against it before decoding. */
  payloadBytes(shape: BoundaryShape, direction: Direction): number;
  /** `tokens` (one per row) is required by codecs that carry them and ignored by the others. */
  encode(x: Float32Array, shape: BoundaryShape, direction: Direction, tokens?: Int32Array): Uint8Array;
  decode(payload: Uint8Array, shape: BoundaryShape, direction: Direction): Decoded;
  /**
   * Where a codec can bound the values a payload decodes to without decoding it: the largest magnitude they
   * can reach (Infinity when some is not finite). Throws CodecError where decode would. The coordinator
   * checks every relayed tensor, and a decode there costs what the whole codec saves on the wire.
   */
  magnitudeBound?(payload: Uint8Array, shape: BoundaryShape, direction: Direction): number;
}

export class CodecError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CodecError';
  }
}

export function isCodecName(name: string): name is CodecName {
  return (codecNames as readonly string[]).includes(name);
}

/** Checks the input of an encode and returns the row count. */
export function checkEncodeInput(codec: CodecName, x: Float32Array, shape: BoundaryShape): number {
  const rows = shape.batch * shape.seq;
  if (x.length !== rows * shape.width) {
    throw new CodecError(
      `${codec}: ${x.length} numbers do not make ${shape.batch}x${shape.seq} rows of ${shape.width}`,
    );
  }
  return rows;
}

/** Checks a payload's length against the codec's own count before any byte of it is read. */
export function checkPayload(
  codec: ActivationCodec,
  payload: Uint8Array,
  shape: BoundaryShape,
  direction: Direction,
): void {
  const want = codec.payloadBytes(shape, direction);
  if (payload.byteLength !== want) {
    throw new CodecError(
      `${codec.name} ${direction} payload of ${payload.byteLength} bytes where ${want} were expected`,
    );
  }
}

/** A view of `bytes` as `T`, copied first when it is not aligned for the element size. */
export function aligned(bytes: Uint8Array, elementBytes: number): ArrayBuffer {
  if (bytes.byteOffset % elementBytes === 0 && bytes.byteLength === bytes.buffer.byteLength)
    return bytes.buffer as ArrayBuffer;
  return bytes.slice().buffer;
}
