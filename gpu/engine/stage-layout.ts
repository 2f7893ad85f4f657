import {
  isFirstStage,
  isLastStage,
  type GptConfig,
  type MicroBatchShape,
  type StageRange,
} from '../model/config.js';
import { numel, stageParams, type ParamSpec } from '../model/params.js';
import { partialCount, REDUCE_RESULT_BYTES, reduceTableBytes } from '../kernels/reduce.js';
import { adamwTableBytes } from '../kernels/adamw.js';
import type { AttentionKind } from '../kernels/flash-attention.js';
import { ArenaPlan, type Slot } from './arena.js';

/** The limits a layout must respect; WebGPU's defaults unless the device grants more. */
export interface LayoutLimits {
  maxBufferSize: number;
  maxStorageBufferBindingSize: number;
}

export const DEFAULT_LIMITS: LayoutLimits = {
  maxBufferSize: 256 * 2 ** 20,
  maxStorageBufferBindingSize: 128 * 2 ** 20,
};

/** What one block keeps from forward for backward. `input` is the previous block's res3 (or the stage input). */
export interface BlockSlots {
  input: Slot;
  ln1: Slot;
  ln1Mean: Slot;
  ln1Rstd: Slot;
  qkv: Slot;
  /** The softmax (B, NH, T, T) for 'scores' attention; each row's log-sum-exp (B, NH, T) for 'flash'. */
  att: Slot;
  atty: Slot;
  attproj: Slot;
  res2: Slot;
  ln2: Slot;
  ln2Mean: Slot;
  ln2Rstd: Slot;
  fch: Slot;
  fchGelu: Slot;
  fcproj: Slot;
  res3: Slot;
}

export interface HeadSlots {
  lnf: Slot;
  lnfMean: Slot;
  lnfRstd: Slot;
  logits: Slot;
  probs: Slot;
  losses: Slot;
  targets: Slot;
  dlogits: Slot;
}

/** Backward scratch, reused by every block (blocks run backward one after another). */
export interface ScratchSlots {
  /** Gradient of the residual stream, walked from the stage output back to its input. */
  dres: Slot;
  dln: Slot;
  dqkv: Slot;
  datty: Slot;
  /** Score gradients (B, NH, T, T) for 'scores' attention; rowsum(dout * out) (B, NH, T) for 'flash'. */
  dpreatt: Slot;
  dfch: Slot;
}

export interface StageLayout {
  attention: AttentionKind;
  specs: ParamSpec[];
  plan: ArenaPlan;
  params: Slot[];
  grads: Slot[];
  m: Slot[];
  v: Slot[];
  tokens: Slot | null;
  x0: Slot;
  blocks: BlockSlots[];
  head: HeadSlots | null;
  scratch: ScratchSlots;
  partials: Slot;
  flags: Slot;
  lossResult: Slot;
  normResult: Slot;
  /** Size of the MAP_READ buffer for activations and parameter export, which go through it in chunks. */
  stagingBytes: number;
}

/** Bytes of the small uniform buffers each launch owns; a generous bound per block and per tensor. */
const UNIFORM_BYTES_PER_BLOCK = 64 * 256;
const UNIFORM_BYTES_PER_TENSOR = 2 * 256;
const UNIFORM_BYTES_FIXED = 64 * 256;
/** Small staging buffer for the loss and the gradient norm. */
const SMALL_STAGING_BYTES = 256;

export function planStage(
  config: GptConfig,
  range: StageRange,
  shape: MicroBatchShape,
  limits: LayoutLimits = DEFAULT_LIMITS,
  attention: AttentionKind = 'flash',
): StageLayout {
  const plan = new ArenaPlan(limits.maxBufferSize, limits.maxStorageBufferBindingSize);
  const { batch: B, seq: T } = shape;
  const { width: C, heads: NH, vocabSize: V } = config;
  const H = config.mlpRatio * C;
  const BT = B * T;
  const attRows = attention === 'flash' ? B * NH * T : B * NH * T * T;
  const specs = stageParams(config, range);
  const perParam = (role: string, kind: string): Slot[] =>
    specs.map((s) => plan.add(role, numel(s.shape), `${kind} ${s.name}`));
  const params = perParam('params', 'parameter');
  const grads = perParam('grads', 'gradient');
  const m = perParam('adam', 'AdamW m of');
  const v = perParam('adam', 'AdamW v of');
  const act = (floats: number, what: string): Slot => plan.add('acts', floats, what);
  const tokens = isFirstStage(range) ? plan.add('io', BT, 'tokens') : null;
  const x0 = act(BT * C, 'stage input');
  const blocks: BlockSlots[] = [];
  let input = x0;
  for (let l = range.firstBlock; l < range.endBlock; l++) {
    const w = `block ${l}`;
    const b: BlockSlots = {
      input,
      ln1: act(BT * C, `${w} ln1`),
      ln1Mean: act(BT, `${w} ln1 mean`),
      ln1Rstd: act(BT, `${w} ln1 rstd`),
      qkv: act(BT * 3 * C, `${w} qkv`),
      att: act(attRows, `${w} attention ${attention === 'flash' ? 'row statistics' : 'scores'}`),
      atty: act(BT * C, `${w} attention output`),
      attproj: act(BT * C, `${w} attention projection`),
      res2: act(BT * C, `${w} residual 2`),
      ln2: act(BT * C, `${w} ln2`),
      ln2Mean: act(BT, `${w} ln2 mean`),
      ln2Rstd: act(BT, `${w} ln2 rstd`),
      fch: act(BT * H, `${w} mlp hidden`),
      fchGelu: act(BT * H, `${w} mlp gelu`),
      fcproj: act(BT * C, `${w} mlp projection`),
      res3: act(BT * C, `${w} residual 3`),
    };
    blocks.push(b);
    input = b.res3;
  }
  const head: HeadSlots | null = isLastStage(range)
    ? {
        lnf: act(BT * C, 'final layernorm'),
        lnfMean: act(BT, 'final layernorm mean'),
        lnfRstd: act(BT, 'final layernorm rstd'),
        logits: act(BT * V, 'logits'),
        probs: act(BT * V, 'probabilities'),
        losses: act(BT, 'losses'),
        targets: plan.add('io', BT, 'targets'),
        dlogits: act(BT * V, 'logit gradients'),
      }
    : null;
  const hasBlocks = blocks.length > 0;
  const scratchFloats = (n: number): number => (hasBlocks ? n : 1);
  const scratch: ScratchSlots = {
    dres: act(BT * C, 'residual gradient'),
    dln: act(BT * C, 'layernorm output gradient'),
    dqkv: act(scratchFloats(BT * 3 * C), 'qkv gradient'),
    datty: act(scratchFloats(BT * C), 'attention output gradient'),
    dpreatt: act(scratchFloats(attRows), 'attention score gradient'),
    dfch: act(scratchFloats(BT * H), 'mlp hidden gradient'),
  };
  const normPartials = specs.reduce((n, s) => n + partialCount(numel(s.shape)), 0);
  const reduceFloats = Math.max(normPartials, partialCount(BT));
  const paramFloats = specs.reduce((n, s) => n + numel(s.shape), 0);
  const largest = specs.reduce((n, s) => Math.max(n, numel(s.shape)), 0);
  return {
    attention,
    specs,
    plan,
    params,
    grads,
    m,
    v,
    tokens,
    x0,
    blocks,
    head,
    scratch,
    partials: plan.add('io', reduceFloats, 'reduction partials'),
    flags: plan.add('io', reduceFloats, 'reduction flags'),
    lossResult: plan.add('io', REDUCE_RESULT_BYTES / 4, 'loss'),
    normResult: plan.add('io', REDUCE_RESULT_BYTES / 4, 'gradient norm'),
    stagingBytes: 4 * Math.max(BT * C, largest, Math.min(paramFloats, 2 ** 20)),
  };
}

/**
 * GPU memory a stage of this shape allocates, in bytes: every buffer of its layout, its staging buffers and a
 * bound on its uniforms, and the segment tables of AdamW and the sums. Check it against a VRAM cap before creating a {@link GpuStage}.
 */
export function estimateStageMemoryBytes(
  config: GptConfig,
  range: StageRange,
  shape: MicroBatchShape,
  limits: LayoutLimits = DEFAULT_LIMITS,
  attention: AttentionKind = 'flash',
): number {
  const layout = planStage(config, range, shape, limits, attention);
  const uniforms =
    UNIFORM_BYTES_FIXED +
    UNIFORM_BYTES_PER_BLOCK * layout.blocks.length +
    UNIFORM_BYTES_PER_TENSOR * layout.specs.length;
  const lengths = layout.specs.map((s) => numel(s.shape));
  // AdamW's and the gradient norm's over every tensor, the loss's over one value per token.
  const tables =
    adamwTableBytes(lengths) + reduceTableBytes(lengths) + reduceTableBytes([shape.batch * shape.seq]);
  return layout.plan.totalBytes() + layout.stagingBytes + SMALL_STAGING_BYTES + uniforms + tables;
}

/** What a stage of this shape needs from a device: its largest tensor must fit one binding and one buffer. */
export function stageDeviceNeeds(
  config: GptConfig,
  range: StageRange,
  shape: MicroBatchShape,
  attention: AttentionKind = 'flash',
): { maxStorageBufferBindingSize: number; maxBufferSize: number } {
  const unlimited = {
    maxBufferSize: Number.MAX_SAFE_INTEGER,
    maxStorageBufferBindingSize: Number.MAX_SAFE_INTEGER,
  };
  const largest = planStage(config, range, shape, unlimited, attention).plan.largestTensorBytes();
  return { maxStorageBufferBindingSize: largest, maxBufferSize: largest };
}
