import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  LANES_ROWS,
  MATMUL_TILE,
  DEFAULT_DISPATCH_FLOPS,
  Matmul,
  type MatmulDims,
  planChunks,
  watchdogDispatchFlops,
} from '../../gpu/kernels/matmul.js';
import { cpuSubgroupLanes } from '../../gpu/kernels/lanes.js';
import type { EncodedOp, TensorRef } from '../../gpu/kernels/types.js';
import { matmulBackward, matmulForward } from '../../gpu/reference/kernels.js';
import { testDevice } from '../helpers/gpu.js';

/**
 * GPU results must match the float64 CPU reference within |gpu - ref| <= TOL * (1 + |ref|): f32 rounding
 * over the reductions here (K <= 300) stays around 1e-6 relative, so 1e-4 catches any indexing mistake
 * while leaving room for a different summation order.
 */
const TOL = 1e-4;

const ODD: MatmulDims = { rows: 37, inDim: 52, outDim: 71 };
const ODD_NO_VEC4: MatmulDims = { rows: 5, inDim: 29, outDim: 3 };
// Whole tiles (64 x 128, k step 8) in every product: forward, backward input and backward weight.
const ALIGNED: MatmulDims = { rows: 128, inDim: 128, outDim: 256 };
const DEEP: MatmulDims = { rows: 300, inDim: 20, outDim: 36 };
// Multiples of 4 but for the row count: the lanes kernel serves forward and backward input, not backward weight.
const ODD_ROWS: MatmulDims = { rows: 37, inDim: 52, outDim: 68 };

/** Host arrays over plain ArrayBuffers, as writeBuffer wants. */
type Floats = Float32Array<ArrayBuffer>;

let device: GPUDevice;
/** The tiled kernel everywhere, and the lanes kernel wherever a shape fits it (lavapipe runs both). */
const kernels: Record<'tiled' | 'lanes', Matmul> = {} as Record<'tiled' | 'lanes', Matmul>;

beforeAll(async () => {
  ({ device } = await testDevice());
  kernels.tiled = new Matmul(device, { lanes: null });
  kernels.lanes = new Matmul(device);
});

afterAll(() => device?.destroy());

/** Deterministic values in [-1, 1) from a small LCG, so failures reproduce. */
function randomArray(n: number, seed: number): Floats {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2 ** 31 - 1;
  }
  return out;
}

function upload(data: Floats): TensorRef {
  const size = Math.max(16, data.byteLength);
  const buffer = device.createBuffer({
    size,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(buffer, 0, data);
  return { buffer, offset: 0, size };
}

async function run(op: EncodedOp): Promise<void> {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  op.encode(pass);
  pass.end();
  // Waits by mapping a buffer this submission writes: mapping an untouched buffer resolves at once, and
  // onSubmittedWorkDone aborted the process in some early lavapipe runs.
  const fence = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  encoder.clearBuffer(fence);
  device.queue.submit([encoder.finish()]);
  await fence.mapAsync(GPUMapMode.READ);
  fence.destroy();
}

async function download(ref: TensorRef, n: number): Promise<Float32Array> {
  const staging = device.createBuffer({
    size: n * 4,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  encoder.copyBufferToBuffer(ref.buffer, ref.offset, staging, 0, n * 4);
  device.queue.submit([encoder.finish()]);
  await staging.mapAsync(GPUMapMode.READ);
  const out = new Float32Array(staging.getMappedRange().slice(0));
  staging.destroy();
  return out;
}

function expectClose(name: string, got: Float32Array, want: Float64Array): void {
  expect(got.length).toBe(want.length);
  let worst = 0;
  let at = -1;
  for (let i = 0; i < want.length; i++) {
    const err = Math.abs(got[i]! - want[i]!) / (1 + Math.abs(want[i]!));
    if (!(err <= worst)) {
      worst = err;
      at = i;
    }
  }
  expect(worst, `${name}: worst error at ${at}: got ${got[at]}, want ${want[at]}`).toBeLessThanOrEqual(TOL);
}

interface Case {
  inp: Floats;
  weight: Floats;
  bias: Floats;
  dout: Floats;
  /** Starting contents of the accumulating outputs, non-zero to prove they add. */
  dinp0: Floats;
  dweight0: Floats;
  dbias0: Floats;
}

function makeCase({ rows, inDim, outDim }: MatmulDims, seed: number): Case {
  return {
    inp: randomArray(rows * inDim, seed + 1),
    weight: randomArray(outDim * inDim, seed + 2),
    bias: randomArray(outDim, seed + 3),
    dout: randomArray(rows * outDim, seed + 4),
    dinp0: randomArray(rows * inDim, seed + 5),
    dweight0: randomArray(outDim * inDim, seed + 6),
    dbias0: randomArray(outDim, seed + 7),
  };
}

/** llm.c's kernels take B and T; the matmul only sees rows = B*T, so pass B = rows, T = 1. */
function referenceForward(c: Case, d: MatmulDims, withBias: boolean): Float64Array {
  const out = new Float64Array(d.rows * d.outDim);
  matmulForward(
    out,
    Float64Array.from(c.inp),
    Float64Array.from(c.weight),
    withBias ? Float64Array.from(c.bias) : null,
    d.rows,
    1,
    d.inDim,
    d.outDim,
  );
  return out;
}

function referenceBackward(c: Case, d: MatmulDims, withBias: boolean) {
  const dinp = Float64Array.from(c.dinp0);
  const dweight = Float64Array.from(c.dweight0);
  const dbias = withBias ? Float64Array.from(c.dbias0) : null;
  matmulBackward(
    dinp,
    dweight,
    dbias,
    Float64Array.from(c.dout),
    Float64Array.from(c.inp),
    Float64Array.from(c.weight),
    d.rows,
    1,
    d.inDim,
    d.outDim,
  );
  return { dinp, dweight, dbias };
}

const cases: [string, MatmulDims][] = [
  ['odd sizes (scalar path: outDim 71)', ODD],
  ['tiny odd sizes, smaller than one tile (scalar path)', ODD_NO_VEC4],
  ['tile-aligned sizes (vec4 path)', ALIGNED],
  ['a long reduction over rows, partial tiles (vec4 path)', DEEP],
  ['an odd row count with widths divisible by 4', ODD_ROWS],
];

describe.each(['tiled', 'lanes'] as const)('the %s kernel', (kernel) => {
  describe.each(cases)('matmul on %s', (_name, dims) => {
    const c = makeCase(dims, dims.rows * 7 + dims.inDim);
    let matmul: Matmul;
    beforeAll(() => {
      matmul = kernels[kernel];
    });

    it.each([true, false])('forward with bias=%s matches the reference', async (withBias) => {
      const out = upload(new Float32Array(dims.rows * dims.outDim).fill(Number.NaN));
      await run(
        matmul.forward({
          out,
          inp: upload(c.inp),
          weight: upload(c.weight),
          bias: withBias ? upload(c.bias) : null,
          dims,
        }),
      );
      expectClose('out', await download(out, dims.rows * dims.outDim), referenceForward(c, dims, withBias));
    });

    it('backwardInput adds dout · weight to dinp', async () => {
      const dinp = upload(c.dinp0);
      await run(matmul.backwardInput({ dinp, dout: upload(c.dout), weight: upload(c.weight), dims }));
      expectClose(
        'dinp',
        await download(dinp, dims.rows * dims.inDim),
        referenceBackward(c, dims, false).dinp,
      );
    });

    it('backwardInput with overwrite replaces dinp by dout · weight', async () => {
      const dinp = upload(c.dinp0);
      await run(
        matmul.backwardInput({ dinp, dout: upload(c.dout), weight: upload(c.weight), dims, overwrite: true }),
      );
      const fromZero = referenceBackward({ ...c, dinp0: new Float32Array(c.dinp0.length) }, dims, false).dinp;
      expectClose('dinp', await download(dinp, dims.rows * dims.inDim), fromZero);
    });

    it.each([true, false])('backwardWeight with bias=%s adds into dweight and dbias', async (withBias) => {
      const dweight = upload(c.dweight0);
      const dbias = upload(c.dbias0);
      await run(
        matmul.backwardWeight({
          dweight,
          dbias: withBias ? dbias : null,
          dout: upload(c.dout),
          inp: upload(c.inp),
          dims,
        }),
      );
      const want = referenceBackward(c, dims, withBias);
      expectClose('dweight', await download(dweight, dims.outDim * dims.inDim), want.dweight);
      // Without a bias the dbias buffer must be left alone.
      expectClose('dbias', await download(dbias, dims.outDim), want.dbias ?? Float64Array.from(c.dbias0));
    });
  });
});

describe('the lanes kernel', () => {
  it('is chosen on lavapipe, whose subgroups are CPU SIMD lanes', () => {
    expect(cpuSubgroupLanes(device)).toBeGreaterThan(0);
    expect(kernels.lanes.lanes).toBe(cpuSubgroupLanes(device));
    expect(LANES_ROWS % kernels.lanes.lanes!).toBe(0);
  });

  it('gives the same bits as the tiled kernel (same fma order over k)', async () => {
    const dims = DEEP;
    const c = makeCase(dims, 5);
    const outs: Float32Array[] = [];
    for (const m of [kernels.tiled, kernels.lanes]) {
      const out = upload(new Float32Array(dims.rows * dims.outDim));
      const dweight = upload(c.dweight0);
      const inp = upload(c.inp);
      const dout = upload(c.dout);
      await run(m.forward({ out, inp, weight: upload(c.weight), bias: upload(c.bias), dims }));
      await run(m.backwardWeight({ dweight, dbias: null, dout, inp, dims }));
      outs.push(
        await download(out, dims.rows * dims.outDim),
        await download(dweight, dims.outDim * dims.inDim),
      );
    }
    expect(Buffer.from(outs[0]!.buffer).equals(Buffer.from(outs[2]!.buffer))).toBe(true);
    expect(Buffer.from(outs[1]!.buffer).equals(Buffer.from(outs[3]!.buffer))).toBe(true);
  });
});

describe('matmul accumulation and determinism', () => {
  const dims = ODD;
  const c = makeCase(dims, 99);
  let matmul: Matmul;
  beforeAll(() => {
    matmul = kernels.lanes;
  });

  it('running backward twice adds the gradient twice', async () => {
    const dinp = upload(new Float32Array(dims.rows * dims.inDim));
    const dweight = upload(new Float32Array(dims.outDim * dims.inDim));
    const dbias = upload(new Float32Array(dims.outDim));
    const dout = upload(c.dout);
    const inOp = matmul.backwardInput({ dinp, dout, weight: upload(c.weight), dims });
    const wOp = matmul.backwardWeight({ dweight, dbias, dout, inp: upload(c.inp), dims });
    for (let i = 0; i < 2; i++) {
      await run(inOp);
      await run(wOp);
    }
    const zero = {
      ...c,
      dinp0: new Float32Array(c.dinp0.length),
      dweight0: new Float32Array(c.dweight0.length),
      dbias0: new Float32Array(c.dbias0.length),
    };
    const once = referenceBackward(zero, dims, true);
    const twice = (x: Float64Array) => x.map((v) => 2 * v);
    expectClose('dinp', await download(dinp, dims.rows * dims.inDim), twice(once.dinp));
    expectClose('dweight', await download(dweight, dims.outDim * dims.inDim), twice(once.dweight));
    expectClose('dbias', await download(dbias, dims.outDim), twice(once.dbias!));
  });

  it('gives bit-identical results on two runs', async () => {
    const results: Float32Array[][] = [];
    for (let i = 0; i < 2; i++) {
      const out = upload(new Float32Array(dims.rows * dims.outDim));
      const dinp = upload(new Float32Array(dims.rows * dims.inDim));
      const dweight = upload(new Float32Array(dims.outDim * dims.inDim));
      const dbias = upload(new Float32Array(dims.outDim));
      const inp = upload(c.inp);
      const weight = upload(c.weight);
      const dout = upload(c.dout);
      await run(matmul.forward({ out, inp, weight, bias: upload(c.bias), dims }));
      await run(matmul.backwardInput({ dinp, dout, weight, dims }));
      await run(matmul.backwardWeight({ dweight, dbias, dout, inp, dims }));
      results.push([
        await download(out, dims.rows * dims.outDim),
        await download(dinp, dims.rows * dims.inDim),
        await download(dweight, dims.outDim * dims.inDim),
        await download(dbias, dims.outDim),
      ]);
    }
    results[0]!.forEach((first, i) => {
      expect(Buffer.from(first.buffer).equals(Buffer.from(results[1]![i]!.buffer))).toBe(true);
    });
  });

  it('works when inputs and output share one buffer', async () => {
    const n = { inp: dims.rows * dims.inDim, weight: dims.outDim * dims.inDim, out: dims.rows * dims.outDim };
    const align = (x: number) => Math.ceil((x * 4) / 256) * 256;
    const offsets = { inp: 0, weight: align(n.inp), out: align(n.inp) + align(n.weight) };
    const buffer = device.createBuffer({
      size: offsets.out + align(n.out),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(buffer, offsets.inp, c.inp);
    device.queue.writeBuffer(buffer, offsets.weight, c.weight);
    const ref = (key: keyof typeof n): TensorRef => ({ buffer, offset: offsets[key], size: n[key] * 4 });
    await run(matmul.forward({ out: ref('out'), inp: ref('inp'), weight: ref('weight'), bias: null, dims }));
    expectClose('out', await download(ref('out'), n.out), referenceForward(c, dims, false));
  });

  it('rejects tensors that are too small, with the sizes in the message', () => {
    const small = upload(new Float32Array(4));
    expect(() => matmul.forward({ out: small, inp: small, weight: small, bias: null, dims })).toThrow(
      /holds 16 bytes but needs/,
    );
  });
});

describe('matmul dispatch splitting', () => {
  it.each([
    [1024, 1024, 1024, DEFAULT_DISPATCH_FLOPS],
    [8192, 50257, 768, DEFAULT_DISPATCH_FLOPS],
    [100, 70000, 9000, DEFAULT_DISPATCH_FLOPS],
    [37, 71, 52, DEFAULT_DISPATCH_FLOPS],
    [5_000_000, 4, 4, DEFAULT_DISPATCH_FLOPS],
    [3, 9_000_000, 1, DEFAULT_DISPATCH_FLOPS],
    [8192, 8192, 8192, watchdogDispatchFlops(30e12)],
    [8192, 50257, 768, watchdogDispatchFlops(1e11)],
  ])('covers C(%i x %i) with K=%i exactly once, in dispatches under %d FLOPs', (m, n, k, budget) => {
    const chunks = planChunks(m, n, k, MATMUL_TILE, budget);
    let covered = 0;
    for (const c of chunks) {
      expect(c.mOffset % MATMUL_TILE.bm).toBe(0);
      expect(c.nOffset % MATMUL_TILE.bn).toBe(0);
      expect(c.mOffset + c.mCount).toBeLessThanOrEqual(m);
      expect(c.nOffset + c.nCount).toBeLessThanOrEqual(n);
      expect(2 * c.mCount * c.nCount * k).toBeLessThanOrEqual(budget);
      expect(Math.ceil(c.mCount / MATMUL_TILE.bm)).toBeLessThanOrEqual(65535);
      expect(Math.ceil(c.nCount / MATMUL_TILE.bn)).toBeLessThanOrEqual(65535);
      covered += c.mCount * c.nCount;
    }
    expect(covered).toBe(m * n);
  });

  it("sizes dispatches by the adapter's measured speed: a fast GPU runs n=8192 in one dispatch", () => {
    // 30 TFLOP/s: a quarter second is 7.5 TFLOP, above 2 * 8192^3 = 1.1 TFLOP.
    expect(planChunks(8192, 8192, 8192, MATMUL_TILE, watchdogDispatchFlops(30e12))).toHaveLength(1);
    expect(planChunks(8192, 8192, 8192, MATMUL_TILE, DEFAULT_DISPATCH_FLOPS).length).toBeGreaterThan(100);
    // Never looser than the default guard, and a bad measurement is refused.
    expect(watchdogDispatchFlops(1)).toBe(DEFAULT_DISPATCH_FLOPS);
    expect(() => watchdogDispatchFlops(Number.NaN)).toThrow(/positive/);
  });
});
