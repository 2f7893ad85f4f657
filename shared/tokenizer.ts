/** The default byte-level tokenizer: one token per UTF-8 byte, so every text encodes and the vocabulary is 256. */
export const byteVocabSize = 256;

const encoder = new TextEncoder();
// Not fatal: sampled models emit broken UTF-8, which decodes to U+FFFD rather than throwing.
const decoder = new TextDecoder('utf-8', { fatal: false, ignoreBOM: true });

export function encode(text: string): Int32Array {
  return Int32Array.from(encoder.encode(text));
}

/** Ids outside [0, 256) are not bytes; they decode like an invalid byte, to U+FFFD. */
export function decode(ids: ArrayLike<number>): string {
  const bytes = new Uint8Array(ids.length);
  for (let i = 0; i < ids.length; i++) {
    const id = ids[i]!;
    bytes[i] = Number.isInteger(id) && id >= 0 && id < byteVocabSize ? id : 0xff;
  }
  return decoder.decode(bytes);
}
