import { Uniforms, bindOp, computePipeline, declare, first, flatMain, grid, uniformBuffer } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';
import type { AdamWSettings } from '../stage/types.js';

const WG = 256;

const shader = `${declare(['param', 'grad', 'm', 'v'], ['n', 'decay: f32'])}
struct Step { lr: f32, beta1: f32, beta2: f32, eps: f32, weightDecay: f32, c1: f32, c2: f32, gradScale: f32 }
@group(0) @binding(5) var<uniform> s: Step;
${flatMain(WG)}
  if (i >= p.n) { return; }
  let g = grad[i] * s.gradScale;
  let mi = s.beta1 * m[i] + (1.0 - s.beta1) * g;
  let vi = s.beta2 * v[i] + (1.0 - s.beta2) * g * g;
  m[i] = mi;
  v[i] = vi;
  let x = param[i];
  param[i] = x - s.lr * ((mi / s.c1) / (sqrt(vi / s.c2) + s.eps) + s.weightDecay * p.decay * x);
}`;

/**
 * AdamW with bias correction and decoupled weight decay, one launch per tensor. The step's settings live in
 * one small uniform shared by every launch of an {@link AdamW} and are rewritten before each step.
 */
export class AdamW {
  private readonly pipeline: GPUComputePipeline;
  private readonly stepUniform: GPUBuffer;

  constructor(private readonly device: GPUDevice) {
    this.pipeline = computePipeline(device, 'adamw', shader);
    this.stepUniform = uniformBuffer(device, 'adamw.step', new ArrayBuffer(32));
  }

  /** Updates param, m and v of one tensor in place; decay says whether weight decay applies to it. */
  update(a: { param: TensorRef; grad: TensorRef; m: TensorRef; v: TensorRef; n: number; decay: boolean }): EncodedOp {
    const l = 'adamw';
    const tensors = [a.param, a.grad, a.m, a.v].map((t) => first(t, a.n, l));
    const uniform = uniformBuffer(this.device, l, new Uniforms().u32(a.n).f32(a.decay ? 1 : 0).bytes());
    return bindOp(this.device, this.pipeline, l, tensors, [uniform, this.stepUniform], grid(a.n, WG));
  }

  /** Sets the settings of the next submitted update; `step` is the 1-based step number. */
  setStep(settings: AdamWSettings, step: number, gradScale: number): void {
    const u = new Uniforms()
      .f32(settings.learningRate)
      .f32(settings.beta1)
      .f32(settings.beta2)
      .f32(settings.eps)
      .f32(settings.weightDecay)
      .f32(1 - Math.pow(settings.beta1, step))
      .f32(1 - Math.pow(settings.beta2, step))
      .f32(gradScale);
    this.device.queue.writeBuffer(this.stepUniform, 0, u.bytes());
  }
}
