import type { GptConfig } from '../../gpu/model/config.js';

/** A model the benchmarks train: its config, batch, and the sequence lengths to measure. */
export interface BenchConfig {
  name: string;
  config: GptConfig;
  batch: number;
  seqs: number[];
}

export const BENCH_CONFIGS: Record<string, BenchConfig> = {
  /** Small enough that a step takes about a second on lavapipe, big enough that matmuls dominate. */
  small: {
    name: 'small',
    config: { vocabSize: 256, contextLength: 64, width: 128, heads: 4, layers: 4, mlpRatio: 4 },
    batch: 4,
    seqs: [64],
  },
  /** GPT-2 small's body with the byte vocabulary: what the real-GPU targets are stated for. */
  'gpt2-768': {
    name: 'gpt2-768',
    config: { vocabSize: 256, contextLength: 1024, width: 768, heads: 12, layers: 12, mlpRatio: 4 },
    batch: 8,
    seqs: [256, 1024],
  },
};

/** The config `--config <name>` names (default: small), or a clear error listing the names. */
export function benchConfigFromArgs(argv: readonly string[]): BenchConfig {
  const at = argv.indexOf('--config');
  const name = at >= 0 ? argv[at + 1] : 'small';
  const chosen = name === undefined ? undefined : BENCH_CONFIGS[name];
  if (!chosen)
    throw new Error(`--config takes one of ${Object.keys(BENCH_CONFIGS).join(', ')}; got ${String(name)}`);
  return chosen;
}
