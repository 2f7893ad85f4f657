import {
  CodecError,
  aligned,
  checkEncodeInput,
  checkPayload,
  type ActivationCodec,
  type BoundaryShape,
  type Direction,
} from './codec.js';

/**
 * The shared subspace of a run (Pluralis, "Protocol Models"): an orthonormal basis U (width x rank, row-major:
 * U[i * rank + j]) and the fixed embedding parts orthogonal to it, which every node rebuilds from the seed.
 */
export interface SubspaceBasis {
  width: number;
  rank: number;
  basis: Float32Array;
  /** vocab x width: the fixed part of each token's embedding. */
  fixedToken: Float32Array;
  /** contextLength x width: the fixed part of each position's embedding. */
  fixedPos: Float32Array;
}

/** Token ids travel as u16, so a vocabulary must fit in 16 bits. */
const MAX_VOCAB = 1 << 16;

/**
 * The parts of a subspace payload, as views of it: rows x rank f32 coefficients, then (forward) one u16 token
 * id a row. `payload` must start at a multiple of 4 bytes of its buffer.
 */
export function subspaceParts(
  payload: Uint8Array,
  rows: number,
  rank: number,
  direction: Direction,
): { coeffs: Float32Array; ids: Uint16Array | null } {
  const { buffer, byteOffset } = payload;
  return {
    coeffs: new Float32Array(buffer, byteOffset, rows * rank),
    ids: direction === 'forward' ? new Uint16Array(buffer, byteOffset + 4 * rows * rank, rows) : null,
  };
}

/** A received id outside the vocabulary would index past the fixed embedding parts. */
export function checkSubspaceIds(ids: Uint16Array, vocab: number): void {
  for (const id of ids)
    if (id >= vocab) throw new CodecError(`subspace: token id ${id} outside 0..${vocab - 1}`);
}

/**
 * Forward: per token `U^T (x - fixedToken[id] - fixedPos[t])` (rank f32) and the id (u16); the receiver
 * rebuilds `U c + fixedToken[id] + fixedPos[t]`, exact when x minus the fixed parts lies in span(U).
 * Backward: per token `U^T g` (rank f32); the sender's input gradient is `U (U^T g)`, the gradient of the
 * compressed path, since the receiver's input depends on the sender only through c.
 */
export function createSubspaceCodec(b: SubspaceBasis): ActivationCodec {
  const { width: C, rank: K, basis: U } = b;
  const vocab = b.fixedToken.length / C;
  const context = b.fixedPos.length / C;
  if (vocab > MAX_VOCAB) throw new CodecError(`subspace: a vocabulary of ${vocab} does not fit in u16 ids`);
  const checkShape = (shape: BoundaryShape): void => {
    if (shape.width !== C) throw new CodecError(`subspace: width ${shape.width}, the basis has ${C}`);
    if (shape.seq > context)
      throw new CodecError(`subspace: seq ${shape.seq} exceeds the context length ${context}`);
  };
  const fixedRow = (out: Float64Array, id: number, t: number): void => {
    for (let i = 0; i < C; i++) out[i] = b.fixedToken[id * C + i]! + b.fixedPos[t * C + i]!;
  };
  // U's columns, each contiguous: the encode's inner loop then walks two arrays in step (k x width MACs a token).
  const columns = Array.from({ length: K }, (_, j) =>
    Float64Array.from({ length: C }, (_, i) => U[i * K + j]!),
  );
  let fixedMax = 0;
  for (const x of b.fixedToken) fixedMax = Math.max(fixedMax, Math.abs(x));
  let posMax = 0;
  for (const x of b.fixedPos) posMax = Math.max(posMax, Math.abs(x));
  fixedMax += posMax;
  /** A received payload checked as decode needs it (shape, length, ids in the vocabulary), and its parts. */
  const received = (payload: Uint8Array, shape: BoundaryShape, direction: Direction) => {
    checkShape(shape);
    checkPayload(codec, payload, shape, direction);
    const rows = shape.batch * shape.seq;
    const parts = subspaceParts(new Uint8Array(aligned(payload, 4)), rows, K, direction);
    if (parts.ids) checkSubspaceIds(parts.ids, vocab);
    return { rows, ...parts };
  };
  const codec: ActivationCodec = {
    name: 'subspace',
    payloadBytes: (s: BoundaryShape, direction: Direction) =>
      s.batch * s.seq * (4 * K + (direction === 'forward' ? 2 : 0)),
    encode(x, shape, direction, tokens) {
      const rows = checkEncodeInput('subspace', x, shape);
      checkShape(shape);
      const forward = direction === 'forward';
      if (forward && tokens?.length !== rows)
        throw new CodecError(`subspace: forward needs ${rows} token ids, got ${tokens?.length ?? 0}`);
      const out = new Uint8Array(codec.payloadBytes(shape, direction));
      const { coeffs, ids } = subspaceParts(out, rows, K, direction);
      const fixed = new Float64Array(C);
      const d = new Float64Array(C);
      for (let r = 0; r < rows; r++) {
        if (ids) {
          const id = tokens![r]!;
          if (!(id >= 0 && id < vocab))
            throw new CodecError(`subspace: token id ${id} outside 0..${vocab - 1}`);
          ids[r] = id;
          fixedRow(fixed, id, r % shape.seq);
        }
        for (let i = 0; i < C; i++) d[i] = x[r * C + i]! - fixed[i]!;
        for (let j = 0; j < K; j++) {
          const u = columns[j]!;
          let acc = 0;
          for (let i = 0; i < C; i++) acc += d[i]! * u[i]!;
          coeffs[r * K + j] = acc;
        }
      }
      return out;
    },
    decode(payload, shape, direction) {
      const { rows, coeffs, ids } = received(payload, shape, direction);
      const out = new Float32Array(rows * C);
      const fixed = new Float64Array(C);
      const row = new Float64Array(C);
      for (let r = 0; r < rows; r++) {
        if (ids) fixedRow(fixed, ids[r]!, r % shape.seq);
        // Column by column, each element summed in the same order as the GPU kernel: fixed, then j = 0..k-1.
        row.set(fixed);
        for (let j = 0; j < K; j++) {
          const u = columns[j]!;
          const c = coeffs[r * K + j]!;
          for (let i = 0; i < C; i++) row[i]! += u[i]! * c;
        }
        out.set(row, r * C);
      }
      return { data: out, tokens: ids ? Int32Array.from(ids) : null };
    },
    magnitudeBound(payload, shape, direction) {
      const { rows, coeffs, ids } = received(payload, shape, direction);
      // U is orthonormal, so |(U c)_i| <= |c|_2; the fixed parts (forward) add at most their largest entry.
      let most = 0;
      for (let r = 0; r < rows; r++) {
        let squared = 0;
        for (let j = 0; j < K; j++) squared += coeffs[r * K + j]! ** 2;
        if (!Number.isFinite(squared)) return Infinity;
        most = Math.max(most, Math.sqrt(squared));
      }
      return most + (ids ? fixedMax : 0);
    },
  };
  return codec;
}
