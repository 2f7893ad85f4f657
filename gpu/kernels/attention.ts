import { Uniforms, computePipeline, declare, first, flatMain, grid, launch, sequence } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;

/** Index helpers shared by the three shaders; one work item is one (batch, head, query position). */
const prologue = `
  if (i >= p.B * p.NH * p.T) { return; }
  let t = i % p.T;
  let h = (i / p.T) % p.NH;
  let b = i / (p.T * p.NH);
  let hs = p.C / p.NH;
  let C3 = 3u * p.C;
  let scale = inverseSqrt(f32(hs));
  let q = (b * p.T + t) * C3 + h * hs;
  let o = (b * p.T + t) * p.C + h * hs;
  let row = i * p.T;`;

const forwardShader = `${declare(['out', 'att', 'qkv'], ['B', 'T', 'C', 'NH'])}
${flatMain(WG)}
${prologue}
  var maxv = -3.0e38;
  for (var t2 = 0u; t2 <= t; t2++) {
    let k = (b * p.T + t2) * C3 + p.C + h * hs;
    var dot = 0.0;
    for (var d = 0u; d < hs; d++) { dot += qkv[q + d] * qkv[k + d]; }
    let score = dot * scale;
    att[row + t2] = score;
    maxv = max(maxv, score);
  }
  var sum = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) {
    let e = exp(att[row + t2] - maxv);
    att[row + t2] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var t2 = 0u; t2 < p.T; t2++) {
    if (t2 <= t) { att[row + t2] *= inv; } else { att[row + t2] = 0.0; }
  }
  for (var d = 0u; d < hs; d++) {
    var acc = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) { acc += att[row + t2] * qkv[(b * p.T + t2) * C3 + 2u * p.C + h * hs + d]; }
    out[o + d] = acc;
  }
}`;

// Softmax backward: dpreatt = att * (datt - sum(att * datt)), with datt = dout . v recomputed per row.
const scoresBackwardShader = `${declare(['dpreatt', 'att', 'qkv', 'dout'], ['B', 'T', 'C', 'NH'])}
${flatMain(WG)}
${prologue}
  var s = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) {
    let v = (b * p.T + t2) * C3 + 2u * p.C + h * hs;
    var da = 0.0;
    for (var d = 0u; d < hs; d++) { da += dout[o + d] * qkv[v + d]; }
    dpreatt[row + t2] = da;
    s += att[row + t2] * da;
  }
  for (var t2 = 0u; t2 < p.T; t2++) {
    if (t2 <= t) { dpreatt[row + t2] = att[row + t2] * (dpreatt[row + t2] - s); } else { dpreatt[row + t2] = 0.0; }
  }
}`;

// Each work item writes q, k and v gradients of its own position only: k and v gather over the later
// queries (a column of the score matrix) instead of every query scattering into them.
const qkvBackwardShader = `${declare(['dqkv', 'dpreatt', 'att', 'qkv', 'dout'], ['B', 'T', 'C', 'NH'])}
${flatMain(WG)}
${prologue}
  let k = q + p.C;
  let v = q + 2u * p.C;
  let head0 = (b * p.NH + h) * p.T * p.T;
  for (var d = 0u; d < hs; d++) {
    var dq = 0.0;
    for (var t2 = 0u; t2 <= t; t2++) { dq += dpreatt[row + t2] * qkv[(b * p.T + t2) * C3 + p.C + h * hs + d]; }
    dqkv[q + d] += dq * scale;
    var dk = 0.0;
    var dv = 0.0;
    for (var t3 = t; t3 < p.T; t3++) {
      let cell = head0 + t3 * p.T + t;
      dk += dpreatt[cell] * qkv[(b * p.T + t3) * C3 + h * hs + d];
      dv += att[cell] * dout[(b * p.T + t3) * p.C + h * hs + d];
    }
    dqkv[k + d] += dk * scale;
    dqkv[v + d] += dv;
  }
}`;

export interface AttentionDims {
  B: number;
  T: number;
  C: number;
  NH: number;
}

/**
 * Causal multi-head attention over packed q,k,v (B, T, 3C), as in llm.c. att (B, NH, T, T) keeps the
 * softmax for backward; backward needs a (B, NH, T, T) scratch for the score gradients and accumulates dqkv.
 */
export class Attention {
  private readonly fwd: GPUComputePipeline;
  private readonly bwdScores: GPUComputePipeline;
  private readonly bwdQkv: GPUComputePipeline;

  constructor(private readonly device: GPUDevice) {
    this.fwd = computePipeline(device, 'attention.forward', forwardShader);
    this.bwdScores = computePipeline(device, 'attention.backward.scores', scoresBackwardShader);
    this.bwdQkv = computePipeline(device, 'attention.backward.qkv', qkvBackwardShader);
  }

  forward(a: { out: TensorRef; att: TensorRef; qkv: TensorRef; dims: AttentionDims }): EncodedOp {
    const { B, T, C, NH } = a.dims;
    const l = 'attention.forward';
    return launch(
      this.device,
      this.fwd,
      l,
      [first(a.out, B * T * C, l), first(a.att, B * NH * T * T, l), first(a.qkv, B * T * 3 * C, l)],
      this.params(a.dims),
      grid(B * NH * T, WG),
    );
  }

  backward(a: {
    dqkv: TensorRef;
    dpreatt: TensorRef;
    dout: TensorRef;
    qkv: TensorRef;
    att: TensorRef;
    dims: AttentionDims;
  }): EncodedOp {
    const { B, T, C, NH } = a.dims;
    const l = 'attention.backward';
    const dpreatt = first(a.dpreatt, B * NH * T * T, l);
    const att = first(a.att, B * NH * T * T, l);
    const qkv = first(a.qkv, B * T * 3 * C, l);
    const dout = first(a.dout, B * T * C, l);
    const g = grid(B * NH * T, WG);
    return sequence(l, [
      launch(this.device, this.bwdScores, `${l}.scores`, [dpreatt, att, qkv, dout], this.params(a.dims), g),
      launch(this.device, this.bwdQkv, `${l}.qkv`, [first(a.dqkv, B * T * 3 * C, l), dpreatt, att, qkv, dout], this.params(a.dims), g),
    ]);
  }

  private params(dims: AttentionDims): Uniforms {
    if (dims.C % dims.NH !== 0) throw new Error(`attention: C (${dims.C}) must be divisible by NH (${dims.NH})`);
    return new Uniforms().u32(dims.B).u32(dims.T).u32(dims.C).u32(dims.NH);
  }
}
