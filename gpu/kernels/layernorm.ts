import {
  PipelineCache,
  Uniforms,
  declare,
  first,
  flatMain,
  grid,
  launch,
  sequence,
  vec4Width,
} from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 64;
/**
 * The parameter gradients have only C (or C/4) threads, each walking every row: small workgroups spread them
 * over more of a CPU adapter's threads.
 */
const PARAM_WG = 8;
const EPS = '1e-5';

/*
 * E is vec4f when C is a multiple of 4 (each loop step then covers four channels) and f32 otherwise: on CPU
 * adapters a load costs per lane, and a vec4 shares that among four channels. Cv is C in units of E; row
 * sums add E-wide partial sums, then their components, in a fixed order.
 */
function common(vec4: boolean): string {
  return `alias E = ${vec4 ? 'vec4f' : 'f32'};
fn hsum(x: E) -> f32 { return ${vec4 ? '(x.x + x.y) + (x.z + x.w)' : 'x'}; }`;
}

/**
 * With `residual`, the row is first made as inp = ra + rb (the residual add before it, fused as llm.c fuses
 * residual and LayerNorm): the same sum the residual kernel stores, so the bits do not change.
 */
const forwardShader = (vec4: boolean, residual: boolean) => `${declare(
  ['out: E', 'mean', 'rstd', 'inp: E', 'weight: E', 'bias: E', ...(residual ? ['ra: E', 'rb: E'] : [])],
  ['N', 'C', 'Cv'],
)}
${common(vec4)}
${flatMain(WG)}
  if (i >= p.N) { return; }
  let x = i * p.Cv;
  var sum = E(0.0);
  ${
    residual
      ? 'for (var c = 0u; c < p.Cv; c++) { let v = ra[x + c] + rb[x + c]; inp[x + c] = v; sum += v; }'
      : 'for (var c = 0u; c < p.Cv; c++) { sum += inp[x + c]; }'
  }
  let m = hsum(sum) / f32(p.C);
  var sq = E(0.0);
  for (var c = 0u; c < p.Cv; c++) { let d = inp[x + c] - m; sq += d * d; }
  let s = inverseSqrt(hsum(sq) / f32(p.C) + ${EPS});
  for (var c = 0u; c < p.Cv; c++) { out[x + c] = (inp[x + c] - m) * s * weight[c] + bias[c]; }
  mean[i] = m;
  rstd[i] = s;
}`;

const inputBackwardShader = (
  vec4: boolean,
) => `${declare(['dinp: E', 'dout: E', 'inp: E', 'weight: E', 'mean', 'rstd'], ['N', 'C', 'Cv'])}
${common(vec4)}
${flatMain(WG)}
  if (i >= p.N) { return; }
  let x = i * p.Cv;
  let m = mean[i];
  let s = rstd[i];
  var dnormSum = E(0.0);
  var dnormNormSum = E(0.0);
  for (var c = 0u; c < p.Cv; c++) {
    let dnorm = weight[c] * dout[x + c];
    dnormSum += dnorm;
    dnormNormSum += dnorm * (inp[x + c] - m) * s;
  }
  let dnormMean = hsum(dnormSum) / f32(p.C);
  let dnormNormMean = hsum(dnormNormSum) / f32(p.C);
  for (var c = 0u; c < p.Cv; c++) {
    let norm = (inp[x + c] - m) * s;
    dinp[x + c] += (weight[c] * dout[x + c] - dnormMean - norm * dnormNormMean) * s;
  }
}`;

// One thread per channel (or vec4 of channels) sums over the rows in order, instead of every row racing to add
// into the weights.
const paramBackwardShader = (
  vec4: boolean,
) => `${declare(['dweight: E', 'dbias: E', 'dout: E', 'inp: E', 'mean', 'rstd'], ['N', 'C', 'Cv'])}
${common(vec4)}
${flatMain(PARAM_WG)}
  if (i >= p.Cv) { return; }
  var dw = dweight[i];
  var db = dbias[i];
  for (var r = 0u; r < p.N; r++) {
    let d = dout[r * p.Cv + i];
    db += d;
    dw += (inp[r * p.Cv + i] - mean[r]) * rstd[r] * d;
  }
  dweight[i] = dw;
  dbias[i] = db;
}`;

const SHADERS = {
  forward: (vec4: boolean) => forwardShader(vec4, false),
  residualForward: (vec4: boolean) => forwardShader(vec4, true),
  backwardInput: inputBackwardShader,
  backwardParams: paramBackwardShader,
};

/** The shaders' uniforms: rows, channels, and channels in units of the shader's element type. */
function dims(N: number, C: number): Uniforms {
  return new Uniforms()
    .u32(N)
    .u32(C)
    .u32(C / vec4Width(C));
}

/** LayerNorm over the last axis (biased variance, eps 1e-5), saving mean and 1/std per row for backward. */
export class LayerNorm {
  private readonly pipelines: PipelineCache;

  constructor(private readonly device: GPUDevice) {
    this.pipelines = new PipelineCache(device);
  }

  private pipeline(name: keyof typeof SHADERS, C: number): GPUComputePipeline {
    const width = vec4Width(C);
    return this.pipelines.get(`layernorm.${name} x${width}`, () => SHADERS[name](width === 4));
  }

  /**
   * `rows` rows of `C` channels. With `residual`, inp is written first as residual.a + residual.b, in the same
   * launch (one launch fewer than a residual add followed by LayerNorm).
   */
  forward(a: {
    out: TensorRef;
    mean: TensorRef;
    rstd: TensorRef;
    inp: TensorRef;
    weight: TensorRef;
    bias: TensorRef;
    rows: number;
    C: number;
    residual?: { a: TensorRef; b: TensorRef };
  }): EncodedOp {
    const { rows: N, C } = a;
    const l = a.residual ? 'residual+layernorm.forward' : 'layernorm.forward';
    const storage = [
      first(a.out, N * C, l),
      first(a.mean, N, l),
      first(a.rstd, N, l),
      first(a.inp, N * C, l),
      first(a.weight, C, l),
      first(a.bias, C, l),
    ];
    if (a.residual) storage.push(first(a.residual.a, N * C, l), first(a.residual.b, N * C, l));
    const shader = a.residual ? 'residualForward' : 'forward';
    return launch(this.device, this.pipeline(shader, C), l, storage, dims(N, C), grid(N, WG));
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
    const u = dims(N, C);
    const input = [first(a.dinp, N * C, l), dout, inp, first(a.weight, C, l), mean, rstd];
    const params = [first(a.dweight, C, l), first(a.dbias, C, l), dout, inp, mean, rstd];
    return sequence(l, [
      launch(this.device, this.pipeline('backwardInput', C), `${l}.input`, input, u, grid(N, WG)),
      launch(
        this.device,
        this.pipeline('backwardParams', C),
        `${l}.params`,
        params,
        u,
        grid(C / vec4Width(C), PARAM_WG),
      ),
    ]);
  }
}
