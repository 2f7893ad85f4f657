import {
  EXPONENTIATE_ROW,
  attentionLanesFit,
  forwardLanesShader,
  keyBackwardLanesShader,
  queryBackwardLanesShader,
} from './attention-lanes-wgsl.js';
import { cpuSubgroupLanes } from './lanes.js';
import { PipelineCache, Uniforms, declare, first, flatMain, grid, launch, sequence } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;
const DIMS = ['B', 'T', 'C', 'NH'];

/*
 * One thread per (b, h, position) keeps that position's head slice (hs channels) in registers and walks the
 * other positions in order, so each q, k, v or dout row is read as whole vec4s and every sum has a fixed order.
 * The head size is baked into the shader (a pipeline per head size): the register arrays then have a fixed
 * length and the channel loops unroll. When hs is not a multiple of 4 the same code runs on scalars.
 * Strides below are in units of the vector type `V` (vec4f or f32); att and dpreatt stay scalar.
 */
function header(vec: number, hs: number): string {
  const V = vec === 4 ? 'vec4f' : 'f32';
  return `
alias V = ${V};
const N = ${hs / vec}u;
fn hsum(x: V) -> f32 { return ${vec === 4 ? 'x.x + x.y + x.z + x.w' : 'x'}; }`;
}

/** i = (b*NH + h)*T + t, the thread's own position t; `row` is its row of the (B, NH, T, T) score matrix. */
const perPosition = `
  if (i >= p.B * p.NH * p.T) { return; }
  let t = i % p.T;
  let h = (i / p.T) % p.NH;
  let b = i / (p.T * p.NH);
  let row = i * p.T;
  let Cv = p.C / ${'VEC'}u;
  let C3v = 3u * Cv;
  let hv = h * N;
  let scale = inverseSqrt(f32(N * ${'VEC'}u));`;

function position(vec: number): string {
  return perPosition.replaceAll('VEC', String(vec));
}

// Scores, row softmax and the weighted sum of values for query t, in one pass over its row.
function forwardShader(vec: number, hs: number): string {
  return `${declare(['out: V', 'att', 'qkv: V'], DIMS)}${header(vec, hs)}
${flatMain(WG)}
${position(vec)}
  var q: array<V, N>;
  let qb = (b * p.T + t) * C3v + hv;
  for (var j = 0u; j < N; j++) { q[j] = qkv[qb + j]; }
  var maxv = -3.0e38;
  for (var t2 = 0u; t2 <= t; t2++) {
    let kb = (b * p.T + t2) * C3v + Cv + hv;
    var acc = V(0.0);
    for (var j = 0u; j < N; j++) { acc += q[j] * qkv[kb + j]; }
    let s = hsum(acc) * scale;
    att[row + t2] = s;
    maxv = max(maxv, s);
  }
${EXPONENTIATE_ROW}
  var o: array<V, N>;
  for (var t2 = 0u; t2 <= t; t2++) {
    let a = att[row + t2] * inv;
    att[row + t2] = a;
    let vb = (b * p.T + t2) * C3v + 2u * Cv + hv;
    for (var j = 0u; j < N; j++) { o[j] += a * qkv[vb + j]; }
  }
  for (var t2 = t + 1u; t2 < p.T; t2++) { att[row + t2] = 0.0; }
  let ob = (b * p.T + t) * Cv + hv;
  for (var j = 0u; j < N; j++) { out[ob + j] = o[j]; }
}`;
}

// Query side of backward: datt = dout[t] . v[t2], softmax backward dpreatt = att * (datt - sum(att * datt))
// into the scratch row, then dq[t] = scale * sum over t2 of dpreatt[t, t2] k[t2].
function queryBackwardShader(vec: number, hs: number): string {
  return `${declare(['dqkv: V', 'dpreatt', 'att', 'qkv: V', 'dout: V'], DIMS)}${header(vec, hs)}
${flatMain(WG)}
${position(vec)}
  var g: array<V, N>;
  let ob = (b * p.T + t) * Cv + hv;
  for (var j = 0u; j < N; j++) { g[j] = dout[ob + j]; }
  var s = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) {
    let vb = (b * p.T + t2) * C3v + 2u * Cv + hv;
    var acc = V(0.0);
    for (var j = 0u; j < N; j++) { acc += g[j] * qkv[vb + j]; }
    let datt = hsum(acc);
    dpreatt[row + t2] = datt;
    s += att[row + t2] * datt;
  }
  var dq: array<V, N>;
  for (var t2 = 0u; t2 <= t; t2++) {
    let d = att[row + t2] * (dpreatt[row + t2] - s);
    dpreatt[row + t2] = d;
    let kb = (b * p.T + t2) * C3v + Cv + hv;
    for (var j = 0u; j < N; j++) { dq[j] += d * qkv[kb + j]; }
  }
  for (var t2 = t + 1u; t2 < p.T; t2++) { dpreatt[row + t2] = 0.0; }
  let x = (b * p.T + t) * C3v + hv;
  for (var j = 0u; j < N; j++) { dqkv[x + j] += dq[j] * scale; }
}`;
}

// Key side of backward, for key position t (a column of the score matrix): dk[t] gathers dpreatt * q and
// dv[t] gathers att * dout over the queries t3 >= t, instead of every query scattering into them.
function keyBackwardShader(vec: number, hs: number): string {
  return `${declare(['dqkv: V', 'dpreatt', 'att', 'qkv: V', 'dout: V'], DIMS)}${header(vec, hs)}
${flatMain(WG)}
${position(vec)}
  let head0 = (b * p.NH + h) * p.T * p.T;
  var dk: array<V, N>;
  var dv: array<V, N>;
  for (var t3 = t; t3 < p.T; t3++) {
    let cell = head0 + t3 * p.T + t;
    let d = dpreatt[cell];
    let a = att[cell];
    let qb = (b * p.T + t3) * C3v + hv;
    let ob = (b * p.T + t3) * Cv + hv;
    for (var j = 0u; j < N; j++) {
      dk[j] += d * qkv[qb + j];
      dv[j] += a * dout[ob + j];
    }
  }
  let x = (b * p.T + t) * C3v + hv;
  for (var j = 0u; j < N; j++) {
    dqkv[x + Cv + j] += dk[j] * scale;
    dqkv[x + 2u * Cv + j] += dv[j];
  }
}`;
}

const SHADERS = {
  forward: forwardShader,
  queryBackward: queryBackwardShader,
  keyBackward: keyBackwardShader,
};
const LANES_SHADERS = {
  forward: forwardLanesShader,
  queryBackward: queryBackwardLanesShader,
  keyBackward: keyBackwardLanesShader,
};

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
  /** Compiled per shader and head size. */
  private readonly pipelines: PipelineCache;
  /** Subgroup size of the lanes shaders (attention-lanes-wgsl.ts), or null when they are not used. */
  readonly lanes: number | null;

  /** `lanes` defaults to `cpuSubgroupLanes(device)`; null keeps the one-thread-per-position shaders. */
  constructor(
    private readonly device: GPUDevice,
    options: { lanes?: number | null } = {},
  ) {
    this.pipelines = new PipelineCache(device);
    this.lanes = options.lanes === undefined ? cpuSubgroupLanes(device) : options.lanes;
  }

  forward(a: { out: TensorRef; att: TensorRef; qkv: TensorRef; dims: AttentionDims }): EncodedOp {
    const { B, T, C, NH } = a.dims;
    const l = 'attention.forward';
    return this.launch(
      'forward',
      [first(a.out, B * T * C, l), first(a.att, B * NH * T * T, l), first(a.qkv, B * T * 3 * C, l)],
      a.dims,
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
    const tensors = [
      first(a.dqkv, B * T * 3 * C, l),
      first(a.dpreatt, B * NH * T * T, l),
      first(a.att, B * NH * T * T, l),
      first(a.qkv, B * T * 3 * C, l),
      first(a.dout, B * T * C, l),
    ];
    return sequence(l, [
      this.launch('queryBackward', tensors, a.dims),
      this.launch('keyBackward', tensors, a.dims),
    ]);
  }

  private launch(name: keyof typeof SHADERS, tensors: TensorRef[], dims: AttentionDims): EncodedOp {
    const { B, T, C, NH } = dims;
    if (C % NH !== 0) throw new Error(`attention: C (${C}) must be divisible by NH (${NH})`);
    const hs = C / NH;
    const lanes = this.lanes !== null && attentionLanesFit(hs, T, this.lanes) ? this.lanes : null;
    const vec = hs % 4 === 0 ? 4 : 1;
    const key = lanes === null ? `${name} hs${hs} vec${vec}` : `${name} hs${hs} lanes${lanes}`;
    const pipeline = this.pipelines.get(`attention.${key}`, () =>
      lanes === null ? SHADERS[name](vec, hs) : LANES_SHADERS[name]({ hs, lanes }),
    );
    const params = new Uniforms().u32(B).u32(T).u32(C).u32(NH);
    return launch(this.device, pipeline, `attention.${name}`, tensors, params, grid(B * NH * T, lanes ?? WG));
  }
}
