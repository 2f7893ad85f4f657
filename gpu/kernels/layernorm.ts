import { Uniforms, computePipeline, declare, first, flatMain, grid, launch, sequence } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;
const EPS = '1e-5';

const forwardShader = `${declare(['out', 'mean', 'rstd', 'inp', 'weight', 'bias'], ['N', 'C'])}
${flatMain(WG)}
  if (i >= p.N) { return; }
  let x = i * p.C;
  var sum = 0.0;
  for (var c = 0u; c < p.C; c++) { sum += inp[x + c]; }
  let m = sum / f32(p.C);
  var sq = 0.0;
  for (var c = 0u; c < p.C; c++) { let d = inp[x + c] - m; sq += d * d; }
  let s = inverseSqrt(sq / f32(p.C) + ${EPS});
  for (var c = 0u; c < p.C; c++) { out[x + c] = (inp[x + c] - m) * s * weight[c] + bias[c]; }
  mean[i] = m;
  rstd[i] = s;
}`;

const inputBackwardShader = `${declare(['dinp', 'dout', 'inp', 'weight', 'mean', 'rstd'], ['N', 'C'])}
${flatMain(WG)}
  if (i >= p.N) { return; }
  let x = i * p.C;
  let m = mean[i];
  let s = rstd[i];
  var dnormMean = 0.0;
  var dnormNormMean = 0.0;
  for (var c = 0u; c < p.C; c++) {
    let dnorm = weight[c] * dout[x + c];
    dnormMean += dnorm;
    dnormNormMean += dnorm * (inp[x + c] - m) * s;
  }
  dnormMean /= f32(p.C);
  dnormNormMean /= f32(p.C);
  for (var c = 0u; c < p.C; c++) {
    let norm = (inp[x + c] - m) * s;
    dinp[x + c] += (weight[c] * dout[x + c] - dnormMean - norm * dnormNormMean) * s;
  }
}`;

// One thread per channel sums over the rows in order, instead of every row racing to add into the weights.
const paramBackwardShader = `${declare(['dweight', 'dbias', 'dout', 'inp', 'mean', 'rstd'], ['N', 'C'])}
${flatMain(WG)}
  if (i >= p.C) { return; }
  var dw = dweight[i];
  var db = dbias[i];
  for (var r = 0u; r < p.N; r++) {
    let d = dout[r * p.C + i];
    db += d;
    dw += (inp[r * p.C + i] - mean[r]) * rstd[r] * d;
  }
  dweight[i] = dw;
  dbias[i] = db;
}`;

/** LayerNorm over the last axis (biased variance, eps 1e-5), saving mean and 1/std per row for backward. */
export class LayerNorm {
  private readonly fwd: GPUComputePipeline;
  private readonly bwdInput: GPUComputePipeline;
  private readonly bwdParams: GPUComputePipeline;

  constructor(private readonly device: GPUDevice) {
    this.fwd = computePipeline(device, 'layernorm.forward', forwardShader);
    this.bwdInput = computePipeline(device, 'layernorm.backward.input', inputBackwardShader);
    this.bwdParams = computePipeline(device, 'layernorm.backward.params', paramBackwardShader);
  }

  /** `rows` rows of `C` channels. */
  forward(a: {
    out: TensorRef;
    mean: TensorRef;
    rstd: TensorRef;
    inp: TensorRef;
    weight: TensorRef;
    bias: TensorRef;
    rows: number;
    C: number;
  }): EncodedOp {
    const { rows: N, C } = a;
    const l = 'layernorm.forward';
    return launch(
      this.device,
      this.fwd,
      l,
      [first(a.out, N * C, l), first(a.mean, N, l), first(a.rstd, N, l), first(a.inp, N * C, l), first(a.weight, C, l), first(a.bias, C, l)],
      new Uniforms().u32(N).u32(C),
      grid(N, WG),
    );
  }

  /** dinp, dweight and dbias all accumulate. */
  backward(a: {
    dinp: TensorRef;
    dweight: TensorRef;
    dbias: TensorRef;
    dout: TensorRef;
    inp: TensorRef;
    weight: TensorRef;
    mean: TensorRef;
    rstd: TensorRef;
    rows: number;
    C: number;
  }): EncodedOp {
    const { rows: N, C } = a;
    const l = 'layernorm.backward';
    const dout = first(a.dout, N * C, l);
    const inp = first(a.inp, N * C, l);
    const mean = first(a.mean, N, l);
    const rstd = first(a.rstd, N, l);
    const dims = new Uniforms().u32(N).u32(C);
    return sequence(l, [
      launch(this.device, this.bwdInput, `${l}.input`, [first(a.dinp, N * C, l), dout, inp, first(a.weight, C, l), mean, rstd], dims, grid(N, WG)),
      launch(this.device, this.bwdParams, `${l}.params`, [first(a.dweight, C, l), first(a.dbias, C, l), dout, inp, mean, rstd], dims, grid(C, WG)),
    ]);
  }
}
