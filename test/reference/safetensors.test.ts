import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors } from '../../gpu/checkpoint/safetensors.js';
import { mulberry32 } from '../../gpu/model/params.js';
import type { NamedTensor } from '../../gpu/stage/types.js';

/** Random bit patterns, so NaN payloads, infinities, -0 and subnormals all appear. */
function randomBits(n: number, seed: number): Float32Array {
  const rand = mulberry32(seed);
  const bits = new Uint32Array(n);
  for (let i = 0; i < n; i++) bits[i] = Math.floor(rand() * 2 ** 32);
  bits[0] = 0x7fc01234; // a NaN with a payload
  return new Float32Array(bits.buffer);
}

const bitsOf = (t: NamedTensor): number[] =>
  Array.from(new Uint32Array(t.data.buffer, t.data.byteOffset, t.data.length));

/** A file built by hand from the format description, with an unpadded header. */
function rawFile(header: string, data: Uint8Array = new Uint8Array(0)): Uint8Array {
  const json = new TextEncoder().encode(header);
  const out = new Uint8Array(8 + json.length + data.length);
  new DataView(out.buffer).setUint32(0, json.length, true);
  out.set(json, 8);
  out.set(data, 8 + json.length);
  return out;
}

const tensorHeader = (name: string, shape: number[], begin: number, end: number, dtype = 'F32'): string =>
  `${JSON.stringify(name)}:{"dtype":"${dtype}","shape":${JSON.stringify(shape)},"data_offsets":[${begin},${end}]}`;

describe('safetensors encode/decode', () => {
  it('round-trips tensors bit-exactly with metadata, in order', () => {
    const tensors: NamedTensor[] = [
      { name: 'b.weight', shape: [3, 5], data: randomBits(15, 1) },
      { name: 'a', shape: [7], data: randomBits(7, 2) },
      { name: 'scalar', shape: [], data: Float32Array.of(-0) },
      { name: 'empty', shape: [0, 4], data: new Float32Array(0) },
      { name: '__proto__', shape: [1], data: Float32Array.of(1.5) },
      { name: '10', shape: [2], data: randomBits(2, 3) },
    ];
    const metadata = { step: '12', ünïcode: 'välue', __proto__x: 'y' };
    const bytes = encodeSafetensors(tensors, metadata);
    const back = decodeSafetensors(bytes);
    expect(back.metadata).toEqual(metadata);
    expect(back.tensors.map((t) => t.name)).toEqual(tensors.map((t) => t.name));
    back.tensors.forEach((t, i) => {
      expect(t.shape).toEqual(tensors[i]!.shape);
      expect(bitsOf(t)).toEqual(bitsOf(tensors[i]!));
    });
  });

  it('writes the documented layout: u64 LE length, space-padded JSON, 8-byte aligned data', () => {
    const data = Float32Array.of(1, 2, 3);
    const bytes = encodeSafetensors([{ name: 'w', shape: [3], data }], { k: 'v' });
    const view = new DataView(bytes.buffer);
    const n = view.getUint32(0, true);
    expect(view.getUint32(4, true)).toBe(0);
    expect(n % 8).toBe(0);
    const text = new TextDecoder().decode(bytes.subarray(8, 8 + n));
    expect(text.trimEnd().length).toBeGreaterThan(n - 8);
    expect(/^ *$/.test(text.slice(text.trimEnd().length))).toBe(true);
    expect(JSON.parse(text)).toEqual({
      __metadata__: { k: 'v' },
      w: { dtype: 'F32', shape: [3], data_offsets: [0, 12] },
    });
    expect(Array.from(new Float32Array(bytes.slice(8 + n).buffer))).toEqual([1, 2, 3]);
  });

  it('reads files written by other tools: unpadded header, keys in any order, no metadata', () => {
    const data = new Uint8Array(Float32Array.of(5, 6, 7).buffer);
    const file = rawFile(`{${tensorHeader('y', [1], 8, 12)},${tensorHeader('x', [2], 0, 8)}}`, data);
    const { tensors, metadata } = decodeSafetensors(file);
    expect(metadata).toEqual({});
    expect(tensors.map((t) => [t.name, Array.from(t.data)])).toEqual([
      ['x', [5, 6]],
      ['y', [7]],
    ]);
    // Reading from an unaligned view of a larger buffer works too.
    const shifted = new Uint8Array(file.length + 1);
    shifted.set(file, 1);
    expect(Array.from(decodeSafetensors(shifted.subarray(1)).tensors[1]!.data)).toEqual([7]);
  });

  it('rejects bad tensors when encoding', () => {
    const d = new Float32Array(2);
    expect(() => encodeSafetensors([{ name: 'a', shape: [3], data: d }], {})).toThrow(/3 values/);
    expect(() =>
      encodeSafetensors(
        [
          { name: 'a', shape: [2], data: d },
          { name: 'a', shape: [2], data: d },
        ],
        {},
      ),
    ).toThrow(/duplicate/);
    expect(() => encodeSafetensors([{ name: '__metadata__', shape: [2], data: d }], {})).toThrow(/name/);
    expect(() => encodeSafetensors([{ name: 'a', shape: [-2], data: d }], {})).toThrow(/dimension/);
  });
});

describe('safetensors malformed input', () => {
  const four = new Uint8Array(4);
  const cases: [string, Uint8Array, RegExp][] = [
    ['empty file', new Uint8Array(0), /truncated/],
    ['short length', new Uint8Array(5), /truncated/],
    ['header past the end', rawFile('{}').subarray(0, 9), /truncated/],
    ['header over 100 MB', Uint8Array.of(0, 0xe2, 0xf5, 0x05, 0, 0, 0, 0), /100 MB/],
    ['64-bit header length', Uint8Array.of(8, 0, 0, 0, 1, 0, 0, 0), /100 MB/],
    ['empty header', rawFile(''), /start/],
    ['invalid UTF-8', rawFile('{"\xff":1}').map((b, i) => (i === 10 ? 0xff : b)), /UTF-8/],
    ['not JSON', rawFile('{"a":'), /JSON/],
    ['JSON array', rawFile('[1]'), /start|object/],
    ['tensor not an object', rawFile('{"a":3}'), /object/],
    ['unknown dtype', rawFile(`{${tensorHeader('a', [1], 0, 4, 'F33')}}`, four), /unknown dtype/],
    ['unsupported dtype', rawFile(`{${tensorHeader('a', [2], 0, 4, 'F16')}}`, four), /only F32/],
    ['missing dtype', rawFile('{"a":{"shape":[1],"data_offsets":[0,4]}}', four), /dtype/],
    ['bad shape', rawFile(`{${tensorHeader('a', [1.5], 0, 4)}}`, four), /shape/],
    ['negative offset', rawFile(`{${tensorHeader('a', [1], -4, 0)}}`, four), /data_offsets/],
    ['offsets backwards', rawFile(`{${tensorHeader('a', [0], 4, 0)}}`, four), /backwards/],
    ['offsets past the data', rawFile(`{${tensorHeader('a', [2], 0, 8)}}`, four), /past/],
    ['size mismatch', rawFile(`{${tensorHeader('a', [2], 0, 4)}}`, four), /span/],
    [
      'overlapping ranges',
      rawFile(`{${tensorHeader('a', [2], 0, 8)},${tensorHeader('b', [2], 4, 12)}}`, new Uint8Array(12)),
      /overlaps/,
    ],
    ['gap', rawFile(`{${tensorHeader('a', [1], 4, 8)}}`, new Uint8Array(8)), /gap/],
    [
      'trailing bytes',
      rawFile(`{${tensorHeader('a', [1], 0, 4)}}`, new Uint8Array(8)),
      /after the last tensor/,
    ],
    ['metadata not strings', rawFile('{"__metadata__":{"a":1}}'), /not a string/],
    ['huge shape', rawFile(`{${tensorHeader('a', [2 ** 40, 2 ** 40], 0, 4)}}`, four), /too large/],
  ];
  for (const [label, bytes, message] of cases) {
    it(`rejects: ${label}`, () => {
      expect(() => decodeSafetensors(bytes)).toThrow(message);
    });
  }

  it('every strict truncation of a valid file is rejected', () => {
    const file = encodeSafetensors([{ name: 'w', shape: [4], data: randomBits(4, 4) }], { a: 'b' });
    for (let n = 0; n < file.length; n++)
      expect(() => decodeSafetensors(file.subarray(0, n))).toThrow(/safetensors/);
  });

  it('random bytes and random corruptions give a result or a safetensors Error, nothing else', () => {
    const valid = encodeSafetensors(
      [
        { name: 'w', shape: [2, 3], data: randomBits(6, 5) },
        { name: 'b', shape: [3], data: randomBits(3, 6) },
      ],
      { step: '1' },
    );
    const decodeOrExplain = (bytes: Uint8Array): void => {
      try {
        const { tensors } = decodeSafetensors(bytes);
        for (const t of tensors) expect(t.data.length).toBe(t.shape.reduce((a, b) => a * b, 1));
      } catch (err) {
        expect(err).toBeInstanceOf(Error);
        expect((err as Error).message).toMatch(/^safetensors: /);
      }
    };
    fc.assert(fc.property(fc.uint8Array({ maxLength: 64 }), decodeOrExplain), { numRuns: 300 });
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat({ max: valid.length - 1 }), fc.integer({ min: 0, max: 255 })), {
          minLength: 1,
          maxLength: 4,
        }),
        fc.nat({ max: valid.length }),
        (edits, keep) => {
          const bytes = valid.slice(0, keep);
          for (const [at, value] of edits) if (at < bytes.length) bytes[at] = value;
          decodeOrExplain(bytes);
        },
      ),
      { numRuns: 1000 },
    );
  });
});
