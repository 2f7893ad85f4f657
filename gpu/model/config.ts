/** A GPT decoder (pre-LayerNorm, GELU, causal attention, untied head) and how its blocks split into stages. */
export interface GptConfig {
  /** Token vocabulary; 256 for the default byte-level tokenizer. */
  vocabSize: number;
  /** Maximum sequence length (rows of the position embedding). */
  contextLength: number;
  /** Residual stream width, C. */
  width: number;
  /** Attention heads; width must be divisible by heads. */
  heads: number;
  /** Transformer blocks in the whole model. */
  layers: number;
  /** MLP hidden width = mlpRatio * width. */
  mlpRatio: number;
}

/** A pipeline stage: the blocks [firstBlock, endBlock) of the model, plus embeddings or head at the ends. */
export interface StageRange {
  /** 0-based stage index. */
  index: number;
  /** Number of stages the model is cut into. */
  count: number;
  firstBlock: number;
  /** Exclusive. */
  endBlock: number;
}

/**
 * Arithmetic of a run. 'fp32': everything f32. 'mixed' (where the device offers `shader-f16`): f16 operands
 * with f32 accumulation in attention, f32 master weights and AdamW state, and dynamic loss scaling.
 */
export type Precision = 'fp32' | 'mixed';

export const PRECISIONS: readonly Precision[] = ['fp32', 'mixed'];

/** Shape of one micro-batch: `batch` sequences of `seq` tokens each (seq <= contextLength). */
export interface MicroBatchShape {
  batch: number;
  seq: number;
}

export function isFirstStage(range: StageRange): boolean {
  return range.index === 0;
}

export function isLastStage(range: StageRange): boolean {
  return range.index === range.count - 1;
}

/** The whole model as a single stage. */
export function wholeModel(config: GptConfig): StageRange {
  return { index: 0, count: 1, firstBlock: 0, endBlock: config.layers };
}

/**
 * Cuts `config.layers` blocks into `stages` consecutive runs, as even as possible; earlier stages get the
 * extra block because the last stage also carries the head and the loss.
 */
export function splitBlocks(config: GptConfig, stages: number): StageRange[] {
  if (!Number.isInteger(stages) || stages < 1)
    throw new Error(`stages must be a positive integer, got ${stages}`);
  if (stages > config.layers) throw new Error(`cannot cut ${config.layers} blocks into ${stages} stages`);
  const base = Math.floor(config.layers / stages);
  const extra = config.layers % stages;
  const ranges: StageRange[] = [];
  let first = 0;
  for (let i = 0; i < stages; i++) {
    const n = base + (i < extra ? 1 : 0);
    ranges.push({ index: i, count: stages, firstBlock: first, endBlock: first + n });
    first += n;
  }
  return ranges;
}

/** Throws a readable error when a config cannot describe a model. */
export function validateConfig(config: GptConfig): void {
  const positive = ['vocabSize', 'contextLength', 'width', 'heads', 'layers', 'mlpRatio'] as const;
  for (const key of positive) {
    const v = config[key];
    if (!Number.isInteger(v) || v < 1) throw new Error(`model.${key} must be a positive integer, got ${v}`);
  }
  if (config.width % config.heads !== 0) {
    throw new Error(`model.width (${config.width}) must be divisible by model.heads (${config.heads})`);
  }
  if (config.width % 4 !== 0) throw new Error(`model.width (${config.width}) must be a multiple of 4`);
}
