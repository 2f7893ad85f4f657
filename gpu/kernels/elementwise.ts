import { Uniforms, computePipeline, declare, first, flatMain, grid, launch } from './op.js';
import type { EncodedOp, TensorRef } from './types.js';

const WG = 256;

const body = (bindings: string[], statement: string): string => `${declare(bindings, ['n'])}
${flatMain(WG)}
  if (i >= p.n) { return; }
  ${statement}
}`;

// tanh and its derivative through exp of a clamped argument: |u| > 9 is already +-1 in f32, and WGSL may
// assume no Inf, so exp must never overflow.
const geluCommon = /* wgsl */ `
const GELU_SCALE: f32 = 0.7978845608028654;
const GELU_CUBIC: f32 = 0.044715;
fn tanhClamped(u: f32) -> f32 {
  let e = exp(2.0 * clamp(u, -9.0, 9.0));
  return (e - 1.0) / (e + 1.0);
}`;

const shaders = {
  gelu: body(['out', 'inp'], `
  let x = inp[i];
  out[i] = 0.5 * x * (1.0 + tanhClamped(GELU_SCALE * (x + GELU_CUBIC * x * x * x)));`) + geluCommon,
  geluBackward: body(['dinp', 'inp', 'dout'], `
  let x = inp[i];
  let th = tanhClamped(GELU_SCALE * (x + GELU_CUBIC * x * x * x));
  let local = 0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * GELU_SCALE * (1.0 + 3.0 * GELU_CUBIC * x * x);
  dinp[i] += local * dout[i];`) + geluCommon,
  residual: body(['out', 'a', 'b'], `out[i] = a[i] + b[i];`),
  residualBackward: body(['da', 'db', 'dout'], `
  let d = dout[i];
  da[i] += d;
  db[i] += d;`),
  fill: body(['out'], `out[i] = 0.0;`),
};

/** GELU (tanh approximation), residual add and zero-fill: one thread per element. */
export class Elementwise {
  private readonly pipelines: Record<keyof typeof shaders, GPUComputePipeline>;

  constructor(private readonly device: GPUDevice) {
    this.pipelines = Object.fromEntries(
      Object.entries(shaders).map(([name, code]) => [name, computePipeline(device, name, code)]),
    ) as Record<keyof typeof shaders, GPUComputePipeline>;
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
    return launch(this.device, this.pipelines[name], name, refs, new Uniforms().u32(n), grid(n, WG));
  }
}
