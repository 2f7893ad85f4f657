import { isLastStage, type GptConfig, type MicroBatchShape, type StageRange } from './config.js';

/**
 * Work of a stage in FLOPs: floating-point operations, a multiply-add counting as 2, matmuls and attention
 * only (LayerNorm, GELU, softmax and the optimizer are a few percent and left out, as in the usual 6N rule).
 * Attention counts the full T x T scores because the kernels compute them before masking.
 */
export function stageForwardFlopsPerToken(config: GptConfig, range: StageRange, seq: number): number {
  const C = config.width;
  const H = config.mlpRatio * C;
  const blockMatmuls = 2 * (3 * C * C + C * C + C * H + H * C);
  const attention = 2 * 2 * seq * C;
  const blocks = (range.endBlock - range.firstBlock) * (blockMatmuls + attention);
  const head = isLastStage(range) ? 2 * C * config.vocabSize : 0;
  return blocks + head;
}

/** Forward plus backward (backward costs twice the forward: gradients of inputs and of weights). */
export function stageTrainFlops(config: GptConfig, range: StageRange, shape: MicroBatchShape): number {
  return 3 * shape.batch * shape.seq * stageForwardFlopsPerToken(config, range, shape.seq);
}
