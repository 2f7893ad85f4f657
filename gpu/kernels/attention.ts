import { Uniforms, computePipeline, declare, first, flatMain, grid, launch, sequence } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;
const DIMS = ['B', 'T', 'C', 'NH'];

/*
 * Work is split so that neighbouring threads read neighbouring addresses: score kernels run one thread per
 * (b, h, t, t2) and walk a head's channels; value kernels run one thread per (b, h, t, channel) and walk the
 * positions; only the row softmax runs one thread per (b, h, t). Every sum keeps a fixed order.
 */
const common = `
  let hs = p.C / p.NH;
  let C3 = 3u * p.C;
  let scale = inverseSqrt(f32(hs));`;

/** i = ((b*NH + h)*T + t)*T + t2 */
const perScore = `
  if (i >= p.B * p.NH * p.T * p.T) { return; }
  let t2 = i % p.T;
  let t = (i / p.T) % p.T;
  let h = (i / (p.T * p.T)) % p.NH;
  let b = i / (p.T * p.T * p.NH);${common}`;

/** i = (b*NH + h)*T + t */
const perRow = `
  if (i >= p.B * p.NH * p.T) { return; }
  let row = i * p.T;
  let t = i % p.T;`;

/** i = ((b*NH + h)*T + t)*hs + d */
const perChannel = `${common}
  if (i >= p.B * p.T * p.C) { return; }
  let d = i % hs;
  let t = (i / hs) % p.T;
  let h = (i / (hs * p.T)) % p.NH;
  let b = i / (hs * p.T * p.NH);
  let head0 = (b * p.NH + h) * p.T * p.T;
  let col = h * hs + d;`;

const scoresShader = `${declare(['att', 'qkv'], DIMS)}
${flatMain(WG)}
${perScore}
  if (t2 > t) { att[i] = 0.0; return; }
  let q = (b * p.T + t) * C3 + h * hs;
  let k = (b * p.T + t2) * C3 + p.C + h * hs;
  var dot = 0.0;
  for (var d = 0u; d < hs; d++) { dot += qkv[q + d] * qkv[k + d]; }
  att[i] = dot * scale;
}`;

const softmaxShader = `${declare(['att'], DIMS)}
${flatMain(WG)}
${perRow}
  var maxv = -3.0e38;
  for (var t2 = 0u; t2 <= t; t2++) { maxv = max(maxv, att[row + t2]); }
  var sum = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) {
    let e = exp(att[row + t2] - maxv);
    att[row + t2] = e;
    sum += e;
  }
  let inv = 1.0 / sum;
  for (var t2 = 0u; t2 <= t; t2++) { att[row + t2] *= inv; }
}`;

const valuesShader = `${declare(['out', 'att', 'qkv'], DIMS)}
${flatMain(WG)}
${perChannel}
  let row = head0 + t * p.T;
  var acc = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) { acc += att[row + t2] * qkv[(b * p.T + t2) * C3 + 2u * p.C + col]; }
  out[(b * p.T + t) * p.C + col] = acc;
}`;

// datt[t, t2] = dout[t] . v[t2], written into the score-gradient scratch.
const dattShader = `${declare(['dpreatt', 'qkv', 'dout'], DIMS)}
${flatMain(WG)}
${perScore}
  if (t2 > t) { dpreatt[i] = 0.0; return; }
  let o = (b * p.T + t) * p.C + h * hs;
  let v = (b * p.T + t2) * C3 + 2u * p.C + h * hs;
  var dot = 0.0;
  for (var d = 0u; d < hs; d++) { dot += dout[o + d] * qkv[v + d]; }
  dpreatt[i] = dot;
}`;

// Softmax backward in place: dpreatt = att * (datt - sum(att * datt)).
const softmaxBackwardShader = `${declare(['dpreatt', 'att'], DIMS)}
${flatMain(WG)}
${perRow}
  var s = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) { s += att[row + t2] * dpreatt[row + t2]; }
  for (var t2 = 0u; t2 <= t; t2++) { dpreatt[row + t2] = att[row + t2] * (dpreatt[row + t2] - s); }
}`;

// Each thread writes the q, k and v gradients of one channel of its own position: k and v gather over the
// later queries (a column of the score matrix) instead of every query scattering into them.
const qkvBackwardShader = `${declare(['dqkv', 'dpreatt', 'att', 'qkv', 'dout'], DIMS)}
${flatMain(WG)}
${perChannel}
  let row = head0 + t * p.T;
  var dq = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) { dq += dpreatt[row + t2] * qkv[(b * p.T + t2) * C3 + p.C + col]; }
  var dk = 0.0;
  var dv = 0.0;
  for (var t3 = t; t3 < p.T; t3++) {
    let cell = head0 + t3 * p.T + t;
    dk += dpreatt[cell] * qkv[(b * p.T + t3) * C3 + col];
    dv += att[cell] * dout[(b * p.T + t3) * p.C + col];
  }
  let x = (b * p.T + t) * C3 + col;
  dqkv[x] += dq * scale;
  dqkv[x + p.C] += dk * scale;
  dqkv[x + 2u * p.C] += dv;
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
  private readonly pipelines: Record<string, GPUComputePipeline>;

  constructor(private readonly device: GPUDevice) {
    const shaders = {
      scores: scoresShader,
      softmax: softmaxShader,
      values: valuesShader,
      datt: dattShader,
      softmaxBackward: softmaxBackwardShader,
      qkvBackward: qkvBackwardShader,
    };
    this.pipelines = Object.fromEntries(Object.entries(shaders).map(([k, code]) => [k, computePipeline(device, `attention.${k}`, code)]));
  }

  forward(a: { out: TensorRef; att: TensorRef; qkv: TensorRef; dims: AttentionDims }): EncodedOp {
    const { B, T, C, NH } = a.dims;
    const l = 'attention.forward';
    const att = first(a.att, B * NH * T * T, l);
    const qkv = first(a.qkv, B * T * 3 * C, l);
    return sequence(l, [
      this.launch('scores', [att, qkv], a.dims, B * NH * T * T),
      this.launch('softmax', [att], a.dims, B * NH * T),
      this.launch('values', [first(a.out, B * T * C, l), att, qkv], a.dims, B * T * C),
    ]);
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
    return sequence(l, [
      this.launch('datt', [dpreatt, qkv, dout], a.dims, B * NH * T * T),
      this.launch('softmaxBackward', [dpreatt, att], a.dims, B * NH * T),
      this.launch('qkvBackward', [first(a.dqkv, B * T * 3 * C, l), dpreatt, att, qkv, dout], a.dims, B * T * C),
    ]);
  }

  private launch(name: string, tensors: TensorRef[], dims: AttentionDims, items: number): EncodedOp {
    if (dims.C % dims.NH !== 0) throw new Error(`attention: C (${dims.C}) must be divisible by NH (${dims.NH})`);
    const params = new Uniforms().u32(dims.B).u32(dims.T).u32(dims.C).u32(dims.NH);
    return launch(this.device, this.pipelines[name]!, `attention.${name}`, tensors, params, grid(items, WG));
  }
}
