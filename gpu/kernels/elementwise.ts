import { PipelineCache, Uniforms, declare, first, flatMain, grid, launch, vec4Width } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 256;

/*
 * E is vec4f when the length is a multiple of 4 (each thread then does four elements) and f32 otherwise: on CPU
 * adapters every load and store pays a per-lane loop, which a vec4 shares among four elements. The arithmetic
 * per element is the same.
 */
const body =
  (bindings: string[], statement: string, helpers = '') =>
  (vec4: boolean): string => `${declare(
    bindings.map((b) => `${b}: E`),
    ['n'],
  )}
alias E = ${vec4 ? 'vec4f' : 'f32'};
${helpers}
${flatMain(WG)}
  if (i >= p.n) { return; }
  ${statement}
}`;

// tanh and its derivative through exp of a clamped argument: |u| > 9 is already +-1 in f32, and WGSL may
// assume no Inf, so exp must never overflow.
/**
 * WGSL `gelu(x)` and `geluGrad(x)` (tanh approximation) over element type `type` (f32 or vec4<f32>): shared by
 * the elementwise kernels and the matmul epilogues that fuse them, so both compute the same bits.
 */
export function geluFunctions(type: string): string {
  return /* wgsl */ `
const GELU_SCALE: f32 = 0.7978845608028654;
const GELU_CUBIC: f32 = 0.044715;
fn tanhClamped(u: ${type}) -> ${type} {
  let e = exp(2.0 * clamp(u, ${type}(-9.0), ${type}(9.0)));
  return (e - 1.0) / (e + 1.0);
}
fn gelu(x: ${type}) -> ${type} {
  return 0.5 * x * (1.0 + tanhClamped(GELU_SCALE * (x + GELU_CUBIC * x * x * x)));
}
fn geluGrad(x: ${type}) -> ${type} {
  let th = tanhClamped(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
  return 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
}`;
}

const shaders = {
  gelu: body(['out', 'inp'], `out[i] = gelu(inp[i]);`, geluFunctions('E')),
  geluBackward: body(['dinp', 'inp', 'dout'], `dinp[i] += geluGrad(inp[i]) * dout[i];`, geluFunctions('E')),
  residual: body(['out', 'a', 'b'], `out[i] = a[i] + b[i];`),
  residualBackward: body(
    ['da', 'db', 'dout'],
    `
  let d = dout[i];
  da[i] += d;
  db[i] += d;`,
  ),
  fill: body(['out'], `out[i] = E(0.0);`),
};

/** GELU (tanh approximation), residual add and zero-fill: one thread per element, or per vec4 of them. */
export class Elementwise {
  private readonly pipelines: PipelineCache;

  constructor(private readonly device: GPUDevice) {
    this.pipelines = new PipelineCache(device);
  }

  /** out = gelu(inp) */
  gelu(a: { out: TensorRef; inp: TensorRef; n: number }): EncodedOp {
    return this.op('gelu', [a.out, a.inp], a.n);
  }

  /** dinp += gelu'(inp) * dout */
  geluBackward(a: { dinp: TensorRef; inp: TensorRef; dout: TensorRef; n: number }): EncodedOp {
    return this.op('geluBackward', [a.dinp, a.inp, a.dout], a.n);
  }

  /** out = a + b */
  residual(a: { out: TensorRef; a: TensorRef; b: TensorRef; n: number }): EncodedOp {
    return this.op('residual', [a.out, a.a, a.b], a.n);
  }

  /** da += dout; db += dout */
  residualBackward(a: { da: TensorRef; db: TensorRef; dout: TensorRef; n: number }): EncodedOp {
    return this.op('residualBackward', [a.da, a.db, a.dout], a.n);
  }

  /** out = 0 (the first n elements) */
  zero(a: { out: TensorRef; n: number }): EncodedOp {
    return this.op('fill', [a.out], a.n);
  }

  private op(name: keyof typeof shaders, tensors: TensorRef[], n: number): EncodedOp {
    const refs = tensors.map((t) => first(t, n, name));
    const width = vec4Width(n);
    const pipeline = this.pipelines.get(`${name} x${width}`, () => shaders[name](width === 4));
    const items = n / width;
    return launch(this.device, pipeline, name, refs, new Uniforms().u32(items), grid(items, WG));
  }
}
