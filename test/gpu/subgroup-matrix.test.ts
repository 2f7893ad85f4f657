import { describe, expect, it } from 'vitest';
import {
  CandidateCheck,
  matmulCandidates,
  matmulOptions,
  tuneMatmul,
  type ProductKernels,
} from '../../gpu/engine/autotune.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import { MATMUL_TILES, Matmul } from '../../gpu/kernels/matmul.js';
import {
  type SubgroupMatrixTile,
  type SubgroupMatrixVariant,
  subgroupMatrixShader,
  subgroupMatrixSpan,
  subgroupMatrixSupport,
} from '../../gpu/kernels/matmul-subgroup-matrix.js';
import * as ref from '../../gpu/reference/kernels.js';
import { testDevice } from '../helpers/gpu.js';
import { TensorPack, fileDevice, maxAbsDiff, maxErrorRatio, randomArray } from './harness.js';

/*
 * The tensor-core matmul (kernels/matmul-subgroup-matrix.ts). It runs only where the adapter offers
 * chromium-experimental-subgroup-matrix with an f16 -> f32 configuration; lavapipe and SwiftShader do not, so
 * on this machine the test on the real builtins skips (with the reason), and the kernel's own code (staging,
 * block offsets, strides, epilogues) runs on lavapipe with the four builtins written out in plain WGSL as
 * Dawn's docs/dawn/features/subgroup_matrix.md defines them.
 */
const dev = fileDevice();
const dims = { rows: 37, inDim: 44, outDim: 27 };
const support = await (async () => {
  const { device } = await testDevice();
  const found = subgroupMatrixSupport(device);
  device.destroy();
  return found;
})();

/** Tolerances of the f16-operand matmul (gpu/README.md): out, dinp 5e-3 + 5e-3; dweight 1e-2 + 1e-2. */
const F16_TOLERANCE = { out: [5e-3, 5e-3], dinp: [5e-3, 5e-3], dweight: [1e-2, 1e-2] } as const;

/** The linear layer's three products on seeded data, and the CPU reference's answers. */
function layer() {
  const { rows, inDim, outDim } = dims;
  const tensors = {
    inp: randomArray(rows * inDim, 11),
    weight: randomArray(outDim * inDim, 12, 0.5),
    bias: randomArray(outDim, 13),
    dout: randomArray(rows * outDim, 14),
    dinp: randomArray(rows * inDim, 15, 0.1),
    dweight: randomArray(outDim * inDim, 16, 0.1),
  };
  const out = new Float32Array(rows * outDim);
  ref.matmulForward(out, tensors.inp, tensors.weight, tensors.bias, 1, rows, inDim, outDim);
  const dinp = tensors.dinp.slice();
  const dweight = tensors.dweight.slice();
  ref.matmulBackward(dinp, dweight, null, tensors.dout, tensors.inp, tensors.weight, 1, rows, inDim, outDim);
  return { tensors, want: { out, dinp, dweight } };
}

async function expectLayerMatches(pack: TensorPack, want: ReturnType<typeof layer>['want'], label: string) {
  const errors: string[] = [];
  for (const name of ['out', 'dinp', 'dweight'] as const) {
    const got = await pack.read(name);
    const [atol, rtol] = F16_TOLERANCE[name];
    errors.push(`${name} ${maxAbsDiff(got, want[name]).toExponential(1)}`);
    expect(maxErrorRatio(got, want[name], atol, rtol), `${label}: ${name}`).toBeLessThanOrEqual(1);
  }
  console.log(`${label}: max |error| ${errors.join(', ')}`);
}

describe('the subgroup-matrix matmul on the real builtins', () => {
  it.skipIf(support.reason !== null)(
    `matches the CPU reference for every f16 -> f32 tile the adapter offers${support.reason ? ` (skipped: ${support.reason})` : ''}`,
    async () => {
      for (const tile of support.tiles) {
        const { tensors, want } = layer();
        const pack = new TensorPack(dev.device, { ...tensors, out: dims.rows * dims.outDim });
        const r = (n: string) => pack.ref(n);
        const m = new Matmul(dev.device, {
          f16: true,
          subgroupMatrix: { forward: tile, backwardInput: tile, backwardWeight: tile },
        });
        await pack.run(
          m.forward({ out: r('out'), inp: r('inp'), weight: r('weight'), bias: r('bias'), dims }),
          m.backwardInput({ dinp: r('dinp'), dout: r('dout'), weight: r('weight'), dims }),
          m.backwardWeight({ dweight: r('dweight'), dbias: null, dout: r('dout'), inp: r('inp'), dims }),
        );
        await expectLayerMatches(pack, want, `subgroup matrix ${JSON.stringify(tile)}`);
        pack.buffer.destroy();
      }
    },
  );
});

describe('the subgroup-matrix candidates on an adapter without the feature (lavapipe)', () => {
  it('are not offered, and the reason says why', () => {
    if (support.reason === null) return; // an adapter with tensor cores: the test above ran them
    expect(support.tiles).toEqual([]);
    expect(support.reason).toMatch(/lacks chromium-experimental-subgroup-matrix|no f16 -> f32 configuration/);
    const candidates = matmulCandidates(dev.device, 'mixed');
    expect(candidates).toEqual(MATMUL_TILES.map((tile) => ({ tile })));
    expect(() => new Matmul(dev.device, { f16: true, subgroupMatrix: { forward: emulatedTile } })).toThrow(
      /needs chromium-experimental-subgroup-matrix/,
    );
  });

  it('the autotuner check passes the f16 tiled kernel and rejects a deliberately wrong candidate', async () => {
    const products = { forward: [dims], backwardInput: [dims], backwardWeight: [dims] };
    const check = new CandidateCheck(dev.device, products);
    try {
      const f16 = new Matmul(dev.device, { lanes: null, f16: true, tile: MATMUL_TILES[5] });
      expect(await check.problem(f16, 'forward')).toBeNull();
      expect(await check.problem(f16, 'backwardInput')).toBeNull();
      // Wrong in the ways a kernel goes wrong: one drops the bias, one adds to C instead of overwriting it.
      const wrong: ProductKernels = {
        forward: (a) => f16.forward({ ...a, bias: null }),
        backwardInput: (a) => f16.backwardInput({ ...a, overwrite: false }),
        backwardWeight: (a) => f16.backwardWeight(a),
      };
      for (const kind of ['forward', 'backwardInput'] as const) {
        const problem = await check.problem(wrong, kind);
        console.log(`wrong ${kind}: ${problem}`);
        expect(problem).toMatch(/differs from the plain tiled kernel's by .* on 37x44->27/);
      }
    } finally {
      check.destroy();
    }
  });
});

describe('a mixed-precision tuning on an adapter without the feature (lavapipe)', () => {
  it('checks its candidates, says why no subgroup-matrix one is among them, and feeds a mixed KernelSet', async () => {
    if (support.reason === null) return; // an adapter with tensor cores tunes them in bench:engine
    const lines: string[] = [];
    const products = { forward: [dims], backwardInput: [dims], backwardWeight: [dims] };
    const tuned = await tuneMatmul(dev.device, {
      products,
      precision: 'mixed',
      lanes: null,
      candidates: [{ tile: MATMUL_TILES[5]! }],
      log: (line) => lines.push(line),
      targetMs: 5,
    });
    expect(lines).toEqual([`matmul tuning: no subgroup-matrix candidate: ${support.reason}`]);
    expect(tuned.tuning.precision).toBe('mixed');
    expect(tuned.trials.map((t) => [t.kind, t.rejected])).toEqual([
      ['forward', undefined],
      ['backwardInput', undefined],
      ['backwardWeight', undefined],
    ]);
    const kernels = new KernelSet(dev.device, { precision: 'mixed', matmul: matmulOptions(tuned.tuning) });
    expect(kernels.matmul.tiles.backwardWeight).toEqual(MATMUL_TILES[5]);
    expect(kernels.matmul.subgroupMatrix).toEqual({});
  }, 600_000);
});

/**
 * The emulation's configuration: 4x4x4 blocks (no hardware's shape, but the kernel's code is the same for
 * any; 8x8x8 made each pipeline compile for minutes on lavapipe), lavapipe's subgroup of 8, 2x2 blocks a
 * workgroup, so the 37x44->27 layer has partial blocks on every axis.
 */
const emulatedTile: SubgroupMatrixTile = { m: 4, n: 4, k: 4, tm: 2, tn: 2, subgroupSize: 8 };

/**
 * The kernel's WGSL with the extension's types and builtins replaced by plain WGSL that every lane runs
 * whole, as Dawn's docs define them for row-major operands (the only kind the kernel loads): a left or
 * right matrix is where it lies in workgroup memory (offset and row stride; the kernel changes neither
 * array between a load and its multiply), a result is its M x N values in f32, and multiply-accumulate sums
 * over K in order. Lean, because lavapipe compiles every pipeline slowly.
 */
function emulated(shader: string, t: SubgroupMatrixTile): string {
  const { m, n, k } = t;
  const builtins = /* wgsl */ `
struct Left { off: u32, stride: u32 }
struct Right { off: u32, stride: u32 }
struct Result { v: array<f32, ${m * n}> }
fn loadLeft(off: u32, colMajor: bool, stride: u32) -> Left { return Left(off, stride); }
fn loadRight(off: u32, colMajor: bool, stride: u32) -> Right { return Right(off, stride); }
fn mma(l: Left, r: Right, acc: Result) -> Result {
  var x = acc;
  for (var i = 0u; i < ${m}u; i++) {
    for (var j = 0u; j < ${n}u; j++) {
      var s = x.v[i * ${n}u + j];
      for (var kk = 0u; kk < ${k}u; kk++) {
        s += f32(As[l.off + i * l.stride + kk]) * f32(Bs[r.off + kk * r.stride + j]);
      }
      x.v[i * ${n}u + j] = s;
    }
  }
  return x;
}
fn storeResult(off: u32, x: Result, colMajor: bool, stride: u32) {
  for (var r = 0u; r < ${m}u; r++) {
    for (var c = 0u; c < ${n}u; c++) { Cs[off + r * stride + c] = x.v[r * ${n}u + c]; }
  }
}
`;
  const replaced = shader
    .replace('enable chromium_experimental_subgroup_matrix;\n', '')
    .replace(/alias Left = [^;]+;\nalias Right = [^;]+;\nalias Result = [^;]+;\n/, builtins)
    .replaceAll('subgroupMatrixLoad<Left>(&As, ', 'loadLeft(')
    .replaceAll('subgroupMatrixLoad<Right>(&Bs, ', 'loadRight(')
    .replaceAll('subgroupMatrixMultiplyAccumulate(', 'mma(')
    .replaceAll('subgroupMatrixStore(&Cs, ', 'storeResult(');
  if (/subgroup_?[mM]atrix/.test(replaced)) throw new Error('an extension builtin was left in the shader');
  return replaced;
}

describe('the subgroup-matrix kernel with the builtins emulated (lavapipe)', () => {
  /** One product through the emulated kernel, dispatched as Matmul does (one chunk). */
  function product(
    pack: TensorPack,
    v: Omit<SubgroupMatrixVariant, 'tile' | 'inputsWritable'>,
    operands: { a: string; b: string; c: string; bias?: string; extra?: string },
    mnk: [number, number, number],
  ) {
    const device = dev.device;
    const variant: SubgroupMatrixVariant = { ...v, inputsWritable: true, tile: emulatedTile };
    const module = device.createShaderModule({ code: emulated(subgroupMatrixShader(variant), emulatedTile) });
    const pipeline = device.createComputePipeline({
      layout: 'auto',
      compute: { module, entryPoint: 'main' },
    });
    const uniform = device.createBuffer({
      size: 32,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(uniform, 0, new Uint32Array([...mnk, 0, 0, 0, 0, 0]));
    const names = [operands.a, operands.b, operands.c, operands.bias, operands.extra];
    const entries: GPUBindGroupEntry[] = [{ binding: 0, resource: { buffer: uniform } }];
    names.forEach((name, i) => {
      if (!name) return;
      const r = pack.ref(name);
      entries.push({ binding: i + 1, resource: { buffer: r.buffer, offset: r.offset, size: r.size } });
    });
    const bindGroup = device.createBindGroup({ layout: pipeline.getBindGroupLayout(0), entries });
    const { bm, bn } = subgroupMatrixSpan(emulatedTile);
    return {
      label: 'emulated subgroup matrix',
      encode(pass: GPUComputePassEncoder) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(Math.ceil(mnk[1] / bn), Math.ceil(mnk[0] / bm));
      },
    };
  }

  it('computes the three products of a linear layer, with bias and accumulation, on ragged shapes', async () => {
    const { rows, inDim, outDim } = dims;
    const { tensors, want } = layer();
    const pack = new TensorPack(dev.device, { ...tensors, out: rows * outDim });
    const plain = { bias: false, accumulate: true, epilogue: 'none' } as const;
    await pack.run(
      product(
        pack,
        { a: 'mk', b: 'nk', bias: true, accumulate: false, epilogue: 'none' },
        { a: 'inp', b: 'weight', c: 'out', bias: 'bias' },
        [rows, outDim, inDim],
      ),
      product(pack, { ...plain, a: 'mk', b: 'kn' }, { a: 'dout', b: 'weight', c: 'dinp' }, [
        rows,
        inDim,
        outDim,
      ]),
      product(pack, { ...plain, a: 'km', b: 'kn' }, { a: 'dout', b: 'inp', c: 'dweight' }, [
        outDim,
        inDim,
        rows,
      ]),
    );
    await expectLayerMatches(pack, want, 'emulated subgroup matrix 4x4x4');
    pack.buffer.destroy();
  }, 300_000);

  it('fuses the GELU epilogues (forward: pre-activation and activation; backward: through gelu)', async () => {
    const { rows, inDim, outDim } = dims;
    const { tensors } = layer();
    const pre = randomArray(rows * inDim, 17);
    const pack = new TensorPack(dev.device, { ...tensors, pre, out: rows * outDim, act: rows * outDim });
    await pack.run(
      product(
        pack,
        { a: 'mk', b: 'nk', bias: true, accumulate: false, epilogue: 'gelu' },
        { a: 'inp', b: 'weight', c: 'out', bias: 'bias', extra: 'act' },
        [rows, outDim, inDim],
      ),
      product(
        pack,
        { a: 'mk', b: 'kn', bias: false, accumulate: false, epilogue: 'geluBackward' },
        { a: 'dout', b: 'weight', c: 'dinp', extra: 'pre' },
        [rows, inDim, outDim],
      ),
    );
    const out = new Float32Array(rows * outDim);
    ref.matmulForward(out, tensors.inp, tensors.weight, tensors.bias, 1, rows, inDim, outDim);
    const act = new Float32Array(out.length);
    ref.geluForward(act, out, out.length);
    const raw = new Float32Array(rows * inDim);
    ref.matmulBackward(
      raw,
      new Float32Array(outDim * inDim),
      null,
      tensors.dout,
      tensors.inp,
      tensors.weight,
      1,
      rows,
      inDim,
      outDim,
    );
    const dinp = new Float32Array(raw.length);
    ref.geluBackward(dinp, pre, raw, dinp.length);
    expect(maxErrorRatio(await pack.read('out'), out, 5e-3, 5e-3), 'out').toBeLessThanOrEqual(1);
    expect(maxErrorRatio(await pack.read('act'), act, 5e-3, 5e-3), 'act').toBeLessThanOrEqual(1);
    expect(maxErrorRatio(await pack.read('dinp'), dinp, 5e-3, 5e-3), 'dinp').toBeLessThanOrEqual(1);
    pack.buffer.destroy();
  }, 300_000);
});
