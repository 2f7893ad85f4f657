import { describe, expect, it } from 'vitest';
import { MATMUL_TILES, Matmul, type MatmulDims } from '../../gpu/kernels/matmul.js';
import type { TileShape } from '../../gpu/kernels/matmul-wgsl.js';
import { geluBackward, geluForward, matmulBackward, matmulForward } from '../../gpu/reference/kernels.js';
import { TensorPack, fileDevice, maxErrorRatio, randomArray } from './harness.js';

/**
 * Every matmul the engine can run (each autotuner tile, single and double-buffered, and the lanes kernel of CPU
 * adapters) on the three products of a linear layer with their fused epilogues: all must give the same bits,
 * since they sum over k in the same order, and match the f64 CPU reference. Partial tiles on every axis.
 */
const dims: MatmulDims = { rows: 72, inDim: 40, outDim: 68 };
const { rows, inDim, outDim } = dims;
const TOL = 1e-5;

const gpu = fileDevice();

const data = {
  inp: randomArray(rows * inDim, 1),
  weight: randomArray(outDim * inDim, 2),
  bias: randomArray(outDim, 3),
  dout: randomArray(rows * outDim, 4),
  pre: randomArray(rows * inDim, 5, 3),
  dweight0: randomArray(outDim * inDim, 6),
};

interface Results {
  out: Float32Array;
  act: Float32Array;
  dinp: Float32Array;
  dweight: Float32Array;
}

async function runAll(matmul: Matmul): Promise<Results> {
  const t = new TensorPack(gpu.device, {
    ...data,
    dweight: data.dweight0,
    out: rows * outDim,
    act: rows * outDim,
    dinp: rows * inDim,
  });
  await t.run(
    matmul.forward({
      out: t.ref('out'),
      inp: t.ref('inp'),
      weight: t.ref('weight'),
      bias: t.ref('bias'),
      dims,
      gelu: t.ref('act'),
    }),
    matmul.backwardInput({
      dinp: t.ref('dinp'),
      dout: t.ref('dout'),
      weight: t.ref('weight'),
      dims,
      overwrite: true,
      geluInput: t.ref('pre'),
    }),
    matmul.backwardWeight({
      dweight: t.ref('dweight'),
      dbias: null,
      dout: t.ref('dout'),
      inp: t.ref('inp'),
      dims,
    }),
  );
  return {
    out: await t.read('out'),
    act: await t.read('act'),
    dinp: await t.read('dinp'),
    dweight: await t.read('dweight'),
  };
}

function reference(): Record<keyof Results, Float64Array> {
  const f64 = (x: Float32Array) => Float64Array.from(x);
  const out = new Float64Array(rows * outDim);
  matmulForward(out, f64(data.inp), f64(data.weight), f64(data.bias), rows, 1, inDim, outDim);
  const act = new Float64Array(out.length);
  geluForward(act, out, out.length);
  const product = new Float64Array(rows * inDim);
  const dweight = f64(data.dweight0);
  matmulBackward(
    product,
    dweight,
    null,
    f64(data.dout),
    f64(data.inp),
    f64(data.weight),
    rows,
    1,
    inDim,
    outDim,
  );
  const dinp = new Float64Array(product.length);
  geluBackward(dinp, f64(data.pre), product, product.length);
  return { out, act, dinp, dweight };
}

const bits = (x: Float32Array) => Buffer.from(x.buffer, x.byteOffset, x.byteLength);
const tileName = (t: TileShape) => `${t.bm}x${t.bn} ${t.tm}x${t.tn}${t.double ? ' double-buffered' : ''}`;

describe('every matmul variant', () => {
  const results = new Map<string, Results>();

  it.each(MATMUL_TILES.map((t) => [tileName(t), t] as const))(
    'tile %s: forward+bias+GELU, backward input through GELU, backward weight match the CPU reference',
    async (name, tile) => {
      const got = await runAll(new Matmul(gpu.device, { lanes: null, tile }));
      const want = reference();
      for (const key of ['out', 'act', 'dinp', 'dweight'] as const)
        expect(maxErrorRatio(got[key], want[key], TOL, TOL), `${name} ${key}`).toBeLessThanOrEqual(1);
      results.set(name, got);
    },
    600_000,
  );

  it('the lanes kernel (CPU adapters) matches too', async () => {
    const matmul = new Matmul(gpu.device);
    expect(matmul.lanes).not.toBeNull();
    results.set('lanes', await runAll(matmul));
  }, 600_000);

  it('all of them give the same bits', () => {
    const [first, ...rest] = [...results.entries()];
    expect(rest.length).toBe(MATMUL_TILES.length);
    for (const [name, r] of rest) {
      for (const key of ['out', 'act', 'dinp', 'dweight'] as const)
        expect(bits(r[key]).equals(bits(first![1][key])), `${name} vs ${first![0]}: ${key}`).toBe(true);
    }
  });
});
