import { encode } from '../../shared/tokenizer.js';
import { mulberry32 } from '../model/params.js';
import type { MicroBatchShape } from '../model/config.js';
import type { MicroBatch } from './trainer.js';

/** A corpus as byte-level token ids (vocabulary 256), split into a training and a held-out part. */
export function byteCorpus(text: string, heldOutFraction = 0.1): { train: Int32Array; heldOut: Int32Array } {
  if (!(heldOutFraction >= 0 && heldOutFraction < 1))
    throw new Error(`heldOutFraction must be in [0, 1), got ${heldOutFraction}`);
  const ids = encode(text);
  const cut = Math.floor(ids.length * (1 - heldOutFraction));
  return { train: ids.subarray(0, cut), heldOut: ids.subarray(cut) };
}

/**
 * Random windows of a token stream as micro-batches: each row is `seq` tokens from a uniformly drawn start,
 * and its targets are the same window shifted by one. Deterministic for a given seed.
 */
export class WindowSampler {
  private readonly rand: () => number;

  constructor(
    private readonly tokens: Int32Array,
    private readonly shape: MicroBatchShape,
    seed: number,
  ) {
    if (tokens.length < shape.seq + 1)
      throw new Error(`the corpus has ${tokens.length} tokens, a window needs ${shape.seq + 1}`);
    this.rand = mulberry32(seed);
  }

  next(): MicroBatch {
    const { batch: B, seq: T } = this.shape;
    const tokens = new Int32Array(B * T);
    const targets = new Int32Array(B * T);
    const starts = this.tokens.length - T;
    for (let b = 0; b < B; b++) {
      const start = Math.floor(this.rand() * starts);
      tokens.set(this.tokens.subarray(start, start + T), b * T);
      targets.set(this.tokens.subarray(start + 1, start + T + 1), b * T);
    }
    return { tokens, targets };
  }

  take(n: number): MicroBatch[] {
    return Array.from({ length: n }, () => this.next());
  }
}
