import {
  FLASH_ROWS,
  flashForwardShader,
  flashKeyBackwardShader,
  flashQueryBackwardShader,
  flashTile,
  type FlashShape,
} from './flash-attention-wgsl.js';
import type { AttentionDims } from './attention.js';
import { PipelineCache, Uniforms, first, launch, sequence, vec4Width } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

/** How a stage runs attention: flash (row statistics only) or with the (B, NH, T, T) softmax kept. */
export type AttentionKind = 'flash' | 'scores';

const SHADERS = {
  forward: flashForwardShader,
  queryBackward: flashQueryBackwardShader,
  keyBackward: flashKeyBackwardShader,
};

/**
 * Causal multi-head attention over packed q,k,v (B, T, 3C) in the FlashAttention-2 manner: forward keeps only
 * the per-row log-sum-exp of the scores, `lse` (B, NH, T); backward recomputes the scores from it, so no
 * (B, NH, T, T) buffer exists. Backward takes a (B, NH, T) scratch `delta` for rowsum(dout * out) and
 * accumulates into dqkv: first the query side (dq, and delta), then the key side (dk, dv).
 */
export class FlashAttention {
  private readonly pipelines: PipelineCache;
  private readonly storageLimit: number;

  /** Operands as f16 with f32 arithmetic (mixed precision); needs `shader-f16` on the device. */
  readonly f16: boolean;

  constructor(
    private readonly device: GPUDevice,
    options: { f16?: boolean } = {},
  ) {
    this.pipelines = new PipelineCache(device);
    this.storageLimit = device.limits.maxComputeWorkgroupStorageSize;
    this.f16 = options.f16 ?? false;
    if (this.f16 && !device.features.has('shader-f16'))
      throw new Error('flash attention: f16 operands need the shader-f16 feature, which this device lacks');
  }

  /** Rows of the key (or query) tile for head size `hs`: the largest that fits this device's workgroup memory. */
  tile(hs: number): number {
    return flashTile(hs, this.storageLimit, this.f16 ? 2 : 4);
  }

  forward(a: { out: TensorRef; lse: TensorRef; qkv: TensorRef; dims: AttentionDims }): EncodedOp {
    const { B, T, C, NH } = a.dims;
    const l = 'flashAttention.forward';
    return this.launch(
      'forward',
      [first(a.out, B * T * C, l), first(a.lse, B * NH * T, l), first(a.qkv, B * T * 3 * C, l)],
      a.dims,
    );
  }

  backward(a: {
    dqkv: TensorRef;
    delta: TensorRef;
    dout: TensorRef;
    out: TensorRef;
    qkv: TensorRef;
    lse: TensorRef;
    dims: AttentionDims;
  }): EncodedOp {
    const { B, T, C, NH } = a.dims;
    const l = 'flashAttention.backward';
    const dqkv = first(a.dqkv, B * T * 3 * C, l);
    const delta = first(a.delta, B * NH * T, l);
    const qkv = first(a.qkv, B * T * 3 * C, l);
    const dout = first(a.dout, B * T * C, l);
    const lse = first(a.lse, B * NH * T, l);
    return sequence(l, [
      this.launch('queryBackward', [dqkv, delta, qkv, first(a.out, B * T * C, l), dout, lse], a.dims),
      this.launch('keyBackward', [dqkv, qkv, dout, lse, delta], a.dims),
    ]);
  }

  private launch(name: keyof typeof SHADERS, tensors: TensorRef[], dims: AttentionDims): EncodedOp {
    const { B, T, C, NH } = dims;
    if (C % NH !== 0) throw new Error(`flash attention: C (${C}) must be divisible by NH (${NH})`);
    if (B * NH > this.device.limits.maxComputeWorkgroupsPerDimension)
      throw new Error(`flash attention: B*NH (${B * NH}) exceeds the device's workgroups per dimension`);
    const hs = C / NH;
    const shape: FlashShape = { hs, vec: vec4Width(hs), tile: this.tile(hs), f16: this.f16 };
    const key = `flashAttention.${name} hs${hs} vec${shape.vec} tile${shape.tile}${this.f16 ? ' f16' : ''}`;
    const pipeline = this.pipelines.get(key, () => SHADERS[name](shape));
    const params = new Uniforms().u32(B).u32(T).u32(C).u32(NH);
    return launch(this.device, pipeline, `flashAttention.${name}`, tensors, params, [
      Math.ceil(T / FLASH_ROWS),
      B * NH,
      1,
    ]);
  }
}
