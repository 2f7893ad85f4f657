import { existsSync, readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { MicroBatchShape } from '../gpu/model/config.js';
import { mulberry32 } from '../gpu/model/params.js';
import type { MicroBatch } from '../gpu/train/trainer.js';
import { encode } from '../shared/tokenizer.js';

export type { MicroBatch };

/**
 * The run's corpus as byte tokens, and the micro-batches cut from it. A micro-batch is a pure function of
 * (seed, step, micro-batch index), so a replayed micro-batch, a resumed run and the single-process trainer
 * all see exactly the same tokens.
 */
export class Corpus {
  constructor(readonly tokens: Int32Array) {}

  static fromText(text: string): Corpus {
    return new Corpus(encode(text));
  }

  static fromFile(path: string): Corpus {
    return Corpus.fromText(readFileSync(path, 'utf8'));
  }

  microBatch(seed: number, step: number, index: number, shape: MicroBatchShape): MicroBatch {
    const { batch, seq } = shape;
    const span = this.tokens.length - seq - 1;
    if (span < 1)
      throw new Error(`the corpus has ${this.tokens.length} tokens, fewer than one sequence of ${seq + 1}`);
    const rand = mulberry32(
      (Math.imul(seed >>> 0, 0x85ebca6b) ^
        Math.imul(step + 1, 0xc2b2ae35) ^
        Math.imul(index + 1, 0x27d4eb2f)) >>>
        0,
    );
    const tokens = new Int32Array(batch * seq);
    const targets = new Int32Array(batch * seq);
    for (let b = 0; b < batch; b++) {
      const start = Math.floor(rand() * span);
      tokens.set(this.tokens.subarray(start, start + seq), b * seq);
      targets.set(this.tokens.subarray(start + 1, start + seq + 1), b * seq);
    }
    return { tokens, targets };
  }
}

const here = dirname(fileURLToPath(import.meta.url));
/** The repository root, from coordinator/ in sources or dist/coordinator/ in the build. */
const repoRoot = existsSync(resolve(here, '..', 'package.json'))
  ? resolve(here, '..')
  : resolve(here, '..', '..');

/** tinyshakespeare next to the repository when present, else the small text shipped in coordinator/corpus. */
export function defaultCorpusPath(): string {
  const shakespeare = resolve(repoRoot, '..', 'shared', 'data', 'tinyshakespeare.txt');
  return existsSync(shakespeare) ? shakespeare : resolve(repoRoot, 'coordinator', 'corpus', 'default.txt');
}
