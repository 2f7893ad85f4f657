import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { byteVocabSize, decode, encode } from '../../shared/tokenizer.js';

describe('byte tokenizer', () => {
  it('encodes UTF-8 bytes and decodes them back', () => {
    expect(Array.from(encode('Hé!'))).toEqual([72, 0xc3, 0xa9, 33]);
    expect(decode(encode('Hé!'))).toBe('Hé!');
    expect(byteVocabSize).toBe(256);
  });

  it('round-trips any string made of whole code points', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme' }), (s) => decode(encode(s)) === s),
      { numRuns: 300 },
    );
  });

  it('replaces invalid sequences and out-of-range ids instead of throwing', () => {
    expect(decode([0xc3])).toBe('\ufffd');
    expect(decode([72, 0xff, 105])).toBe('H\ufffdi');
    expect(decode([72, 256, -1, 1.5, 105])).toBe('H\ufffd\ufffd\ufffdi');
    fc.assert(
      fc.property(fc.array(fc.integer({ min: -5, max: 300 })), (ids) => typeof decode(ids) === 'string'),
    );
  });
});
