import { describe, expect, test } from 'vitest';
import { buildSubspaceBasis } from '../../gpu/codec/basis.js';
import { projectRows } from '../../gpu/codec/projection.js';
import { mulberry32 } from '../../gpu/model/params.js';
import { CodecError, type BoundaryShape } from '../../shared/protocol/codec.js';
import { resolveCodec } from '../../shared/protocol/codec-registry.js';
import { decodeFrame, encodeFrame, FrameError } from '../../shared/protocol/frame.js';
import { boundaryProblem } from '../../shared/protocol/tensor-values.js';
import { ProtocolError, WireReader } from '../../shared/protocol/wire.js';
import { z } from 'zod';

const shape: BoundaryShape = { batch: 2, seq: 8, width: 64 };
const rows = shape.batch * shape.seq;
const model = { vocabSize: 256, contextLength: 8, width: 64, heads: 2, layers: 2, mlpRatio: 4 };

function activations(seed: number, scale = 1): Float32Array {
  const rand = mulberry32(seed);
  return Float32Array.from({ length: rows * shape.width }, () => (rand() * 2 - 1) * scale);
}

function maxAbs(a: Float32Array, b: Float32Array): number {
  return a.reduce((m, x, i) => Math.max(m, Math.abs(x - b[i]!)), 0);
}

describe('baseline codecs', () => {
  test('none is exact, 4 bytes a number', () => {
    const x = activations(1);
    const codec = resolveCodec('none');
    const payload = codec.encode(x, shape, 'forward');
    expect(payload.byteLength).toBe(4 * x.length);
    expect(codec.decode(payload, shape, 'forward').data).toEqual(x);
  });

  test('fp16 keeps the relative error under 2^-11, 2 bytes a number', () => {
    const x = activations(2, 3);
    const codec = resolveCodec('fp16');
    const payload = codec.encode(x, shape, 'backward');
    expect(payload.byteLength).toBe(2 * x.length);
    const y = codec.decode(payload, shape, 'backward').data;
    x.forEach((v, i) => expect(Math.abs(y[i]! - v)).toBeLessThanOrEqual(Math.abs(v) * 2 ** -11 + 6e-8));
  });

  test('int8 keeps each number within half a step of its row (absmax/254), 1 byte a number + a scale a row', () => {
    const x = activations(3, 5);
    x[7] = 40; // one outlier coarsens its own row only
    const codec = resolveCodec('int8');
    const payload = codec.encode(x, shape, 'forward');
    expect(payload.byteLength).toBe(rows * (4 + shape.width));
    const y = codec.decode(payload, shape, 'forward').data;
    for (let r = 0; r < rows; r++) {
      const row = x.subarray(r * shape.width, (r + 1) * shape.width);
      const absmax = row.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect(maxAbs(row, y.subarray(r * shape.width, (r + 1) * shape.width))).toBeLessThanOrEqual(
        (absmax / 254) * (1 + 1e-6),
      );
    }
    expect(maxAbs(x.subarray(64), y.subarray(64))).toBeLessThan(5 / 254 + 1e-6);
  });

  test('int8 refuses a payload whose scale is not finite', () => {
    const codec = resolveCodec('int8');
    const payload = codec.encode(activations(4), shape, 'forward');
    new Float32Array(payload.buffer, 0, rows)[3] = Number.NaN;
    expect(() => codec.decode(payload, shape, 'forward')).toThrow(/row 3 has the scale NaN/);
  });

  test("fp16 and int8: the coordinator's check bounds the values without decoding them, and refuses what decoding would", () => {
    const tensor = (payload: Uint8Array) => ({ dtype: 'f32' as const, shape: [2, 8, 64], data: payload });
    for (const name of ['fp16', 'int8']) {
      const codec = resolveCodec(name);
      const run = { codec, shape: { batch: shape.batch, seq: shape.seq }, model: { width: shape.width } };
      const x = activations(11, 7);
      const payload = codec.encode(x, shape, 'forward');
      const decoded = codec.decode(payload, shape, 'forward').data;
      const most = decoded.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      const bound = codec.magnitudeBound!(payload, shape, 'forward');
      expect(bound, name).toBeGreaterThanOrEqual(most);
      // fp16: exactly the largest value; int8: 128/127 of it at most.
      expect(bound, name).toBeLessThanOrEqual(name === 'fp16' ? most : (most * 128) / 127 + 1e-6);
      expect(boundaryProblem(run, tensor(payload), 'forward')).toBeNull();
      expect(boundaryProblem(run, tensor(payload.subarray(0, 10)), 'forward')).toMatch(/do not decode/);
    }
    const fp16 = resolveCodec('fp16');
    // (No finite half reaches the absurd limit: fp16 tops out at 65504.)
    const fp16Run = { codec: fp16, shape: { batch: 2, seq: 8 }, model: { width: 64 } };
    for (const [bits, problem] of [
      [0x7c00, /non-finite|Infinity/], // +Inf
      [0xfe00, /non-finite|NaN/], // NaN, sign set
    ] as const) {
      const payload = fp16.encode(activations(12), shape, 'forward');
      new Uint16Array(payload.buffer)[77] = bits;
      expect(boundaryProblem(fp16Run, tensor(payload), 'forward')).toMatch(problem);
      const decodedVerdict = boundaryProblem(
        { ...fp16Run, codec: { ...fp16, magnitudeBound: undefined } },
        tensor(payload),
        'forward',
      );
      expect(decodedVerdict).toMatch(problem);
    }
    const int8 = resolveCodec('int8');
    const int8Run = { codec: int8, shape: { batch: 2, seq: 8 }, model: { width: 64 } };
    const payload = int8.encode(activations(13), shape, 'forward');
    const scales = new Float32Array(payload.buffer, 0, rows);
    scales[2] = Infinity;
    expect(boundaryProblem(int8Run, tensor(payload), 'forward')).toMatch(/do not decode: int8: row 2/);
    scales[2] = 1e5;
    expect(boundaryProblem(int8Run, tensor(payload), 'forward')).toMatch(/beyond any honest value/);
  });

  test('a payload of the wrong length is refused before decoding', () => {
    for (const name of ['none', 'fp16', 'int8']) {
      const codec = resolveCodec(name);
      expect(() => codec.decode(new Uint8Array(10), shape, 'forward')).toThrow(CodecError);
    }
  });
});

describe('subspace codec (CPU reference)', () => {
  const basis = buildSubspaceBasis(model, 7, 4, 'fixed');
  const codec = resolveCodec('subspace', () => basis);
  const tokens = Int32Array.from({ length: rows }, (_, i) => (i * 37) % 256);

  /** Fixed embedding parts plus something inside span(U): what a boundary carries in a constrained run. */
  function inside(): Float32Array {
    const x = activations(5, 2);
    projectRows(x, shape.width, basis.basis, basis.rank, null);
    for (let r = 0; r < rows; r++)
      for (let i = 0; i < shape.width; i++)
        x[r * shape.width + i]! +=
          basis.fixedToken[tokens[r]! * shape.width + i]! +
          basis.fixedPos[(r % shape.seq) * shape.width + i]!;
    return x;
  }

  test('U is orthonormal and the fixed parts are orthogonal to it', () => {
    const { basis: U, rank: K, width: C } = basis;
    for (let a = 0; a < K; a++)
      for (let b = 0; b < K; b++) {
        let dot = 0;
        for (let i = 0; i < C; i++) dot += U[i * K + a]! * U[i * K + b]!;
        expect(dot).toBeCloseTo(a === b ? 1 : 0, 6);
      }
    for (let j = 0; j < K; j++) {
      let dot = 0;
      for (let i = 0; i < C; i++) dot += U[i * K + j]! * basis.fixedToken[65 * C + i]!;
      expect(Math.abs(dot)).toBeLessThan(1e-7);
    }
  });

  test('the same seed gives the same basis on every node; another seed another one', () => {
    expect(buildSubspaceBasis(model, 7, 4, 'fixed').basis).toEqual(basis.basis);
    expect(buildSubspaceBasis(model, 8, 4).basis).not.toEqual(basis.basis);
  });

  test('forward: rank f32 + a u16 id a token, and exact to 1e-6 inside the subspace; the ids come back', () => {
    const x = inside();
    const payload = codec.encode(x, shape, 'forward', tokens);
    expect(payload.byteLength).toBe(rows * (4 * 4 + 2));
    const out = codec.decode(payload, shape, 'forward');
    expect(maxAbs(out.data, x)).toBeLessThan(1e-6);
    expect(out.tokens).toEqual(tokens);
  });

  test('backward: rank f32 a token, the gradient projected onto span(U)', () => {
    const g = activations(6);
    const payload = codec.encode(g, shape, 'backward');
    expect(payload.byteLength).toBe(rows * 4 * 4);
    const projected = g.slice();
    projectRows(projected, shape.width, basis.basis, basis.rank, null);
    expect(maxAbs(codec.decode(payload, shape, 'backward').data, projected)).toBeLessThan(1e-6);
  });

  test('bad token ids are refused on both ends', () => {
    expect(() =>
      codec.encode(
        inside(),
        shape,
        'forward',
        tokens.map(() => 300),
      ),
    ).toThrow(/token id 300/);
    const payload = codec.encode(inside(), shape, 'forward', tokens);
    new Uint16Array(payload.buffer, rows * 16, rows)[0] = 999;
    expect(() => codec.decode(payload, shape, 'forward')).toThrow(/token id 999/);
    expect(() => codec.magnitudeBound!(payload, shape, 'forward')).toThrow(/token id 999/);
  });

  test("the coordinator's check bounds the decoded values without decoding, and refuses what decoding would", () => {
    const run = { codec, shape: { batch: shape.batch, seq: shape.seq }, model: { width: shape.width } };
    const tensor = (payload: Uint8Array) => ({ dtype: 'f32' as const, shape: [2, 8, 64], data: payload });
    for (const [direction, x] of [
      ['forward', inside()],
      ['backward', activations(9, 3)],
    ] as const) {
      const payload = codec.encode(x, shape, direction, tokens);
      const decoded = codec.decode(payload, shape, direction).data;
      const bound = codec.magnitudeBound!(payload, shape, direction);
      const most = decoded.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      expect(bound).toBeGreaterThanOrEqual(most);
      // Tight enough to mean something: within a few times the largest value.
      expect(bound).toBeLessThan(10 * most);
      expect(boundaryProblem(run, tensor(payload), direction)).toBeNull();
      const coeffs = new Float32Array(payload.buffer, 0, rows * 4);
      coeffs[5] = NaN;
      expect(boundaryProblem(run, tensor(payload), direction)).toMatch(/non-finite/);
      coeffs[5] = 3e6;
      expect(boundaryProblem(run, tensor(payload), direction)).toMatch(/beyond any honest value/);
      expect(boundaryProblem(run, tensor(payload.subarray(0, 10)), direction)).toMatch(/do not decode/);
    }
  });
});

describe('the codec is checked on both ends', () => {
  test('a node refuses a codec name it does not know', () => {
    expect(() => resolveCodec('topk')).toThrow(/unknown activation codec "topk"/);
  });

  test('a frame with an unknown codec byte is refused', () => {
    const frame = encodeFrame(1, 0, { dtype: 'f32', shape: [2], data: new Float32Array(2) });
    frame[6] = 9;
    expect(() => decodeFrame(frame)).toThrow(FrameError);
    expect(() => decodeFrame(frame)).toThrow(/unknown codec code 9/);
  });

  test('an encoded frame names its codec and keeps the payload', () => {
    const payload = resolveCodec('int8').encode(activations(8), shape, 'forward');
    const frame = decodeFrame(
      encodeFrame(3, 0, { dtype: 'f32', shape: [2, 8, 64], data: payload, codec: 'int8' }),
    );
    expect(frame.codec).toBe('int8');
    expect(frame.tensor.data).toEqual(payload);
  });

  const schema = z.object({ id: z.number(), tensors: z.number() });
  const reader = (codec?: { name: 'int8' | 'fp16'; payloadBytes: number }) =>
    new WireReader(schema, () => [{ dtype: 'f32' as const, shape: [2, 8, 64], ...(codec ? { codec } : {}) }]);

  test('the receiver refuses a frame in another codec than its run uses, and a payload of the wrong length', () => {
    const fp16 = resolveCodec('fp16').encode(activations(9), shape, 'forward');
    const r1 = reader({ name: 'int8', payloadBytes: rows * 68 });
    r1.readText(JSON.stringify({ id: 1, tensors: 1 }));
    expect(() =>
      r1.readBinary(encodeFrame(1, 0, { dtype: 'f32', shape: [2, 8, 64], data: fp16, codec: 'fp16' })),
    ).toThrow(/uses the codec fp16; this run uses int8/);
    const r2 = reader({ name: 'fp16', payloadBytes: fp16.byteLength });
    r2.readText(JSON.stringify({ id: 1, tensors: 1 }));
    expect(() =>
      r2.readBinary(
        encodeFrame(1, 0, { dtype: 'f32', shape: [2, 8, 64], data: fp16.subarray(2), codec: 'fp16' }),
      ),
    ).toThrow(ProtocolError);
    const r3 = reader();
    r3.readText(JSON.stringify({ id: 1, tensors: 1 }));
    expect(() =>
      r3.readBinary(encodeFrame(1, 0, { dtype: 'f32', shape: [2, 8, 64], data: fp16, codec: 'fp16' })),
    ).toThrow(/this run uses none/);
  });
});

test('fp16 bits match IEEE binary16 rounding (nearest even) at the edges', async () => {
  const { toHalfBits, fromHalfBits } = await import('../../shared/protocol/codec-fp16.js');
  const cases: Array<[number, number]> = [
    [1, 0x3c00],
    [-2, 0xc000],
    [65504, 0x7bff],
    [65520, 0x7c00],
    [2 ** -24, 0x0001],
    [2 ** -25, 0x0000],
    [1 + 2 ** -11, 0x3c00],
    [1 + 3 * 2 ** -11, 0x3c02],
    [0, 0],
  ];
  for (const [x, bits] of cases) expect(toHalfBits(x)).toBe(bits);
  for (let h = 0; h < 0x7c00; h += 97) expect(toHalfBits(fromHalfBits(h))).toBe(h);
});

test('positions kept in span(U) leave no fixed position part: the receiver rebuilds only the token part', () => {
  const basis = buildSubspaceBasis(model, 7, 4, 'subspace');
  expect(basis.fixedPos.every((v) => v === 0)).toBe(true);
  expect(basis.fixedToken).toEqual(buildSubspaceBasis(model, 7, 4, 'fixed').fixedToken);
});
