import { AdamW } from '../kernels/adamw.js';
import { Attention } from '../kernels/attention.js';
import { CrossEntropy } from '../kernels/crossentropy.js';
import { Elementwise } from '../kernels/elementwise.js';
import { Encoder } from '../kernels/encoder.js';
import { FlashAttention, type AttentionKind } from '../kernels/flash-attention.js';
import { LayerNorm } from '../kernels/layernorm.js';
import { Matmul, type MatmulOptions } from '../kernels/matmul.js';
import type { Precision } from '../model/config.js';
import { Reduce } from '../kernels/reduce.js';

/** Choices that change which kernels run, not what they compute. */
export interface KernelOptions {
  /**
   * Subgroup size for the lanes kernels (matmul, attention), null for the workgroup-memory kernels. Default:
   * the device's, when it runs subgroups as CPU SIMD lanes (`cpuSubgroupLanes`).
   */
  lanes?: number | null;
  /**
   * Attention kernels: 'flash' (no T x T buffer) or 'scores' (the (B, NH, T, T) softmax kept for backward).
   * Default: 'scores' where the lanes kernels run (CPU adapters, where they measured faster), else 'flash'.
   */
  attention?: AttentionKind;
  /**
   * 'mixed': matmuls (the tiled kernel) and flash attention with f16 operands and f32 arithmetic; needs the
   * device's `shader-f16`.
   */
  precision?: Precision;
  /**
   * Kernels and dispatch cap, as the autotuner chose them for this adapter (engine/autotune.ts); a tuning
   * for mixed precision may name the subgroup-matrix kernel, which runs only with `precision: 'mixed'`.
   */
  matmul?: Pick<MatmulOptions, 'tiles' | 'subgroupMatrix' | 'maxDispatchFlops'>;
}

/** Every kernel's compiled pipelines on one device; shared by the stages on that device. */
export class KernelSet {
  readonly encoder: Encoder;
  readonly layernorm: LayerNorm;
  readonly matmul: Matmul;
  readonly attention: Attention;
  readonly flashAttention: FlashAttention;
  /** Which attention kernels the stages on this device run; their layouts follow it. */
  readonly attentionKind: AttentionKind;
  readonly elementwise: Elementwise;
  readonly crossentropy: CrossEntropy;
  readonly reduce: Reduce;

  constructor(
    readonly device: GPUDevice,
    options: KernelOptions = {},
  ) {
    this.encoder = new Encoder(device);
    this.layernorm = new LayerNorm(device);
    const mixed = options.precision === 'mixed';
    this.matmul = new Matmul(device, { ...options.matmul, lanes: options.lanes, f16: mixed });
    this.attention = new Attention(device, { lanes: options.lanes });
    this.flashAttention = new FlashAttention(device, { f16: mixed });
    this.attentionKind = options.attention ?? (mixed || this.attention.lanes === null ? 'flash' : 'scores');
    if (mixed && this.attentionKind !== 'flash')
      throw new Error("mixed precision runs flash attention: pass attention 'flash' or leave it out");
    this.elementwise = new Elementwise(device);
    this.crossentropy = new CrossEntropy(device);
    this.reduce = new Reduce(device);
  }

  /** AdamW keeps its per-step settings in a uniform, so each stage gets its own instance. */
  adamw(): AdamW {
    return new AdamW(this.device);
  }
}
