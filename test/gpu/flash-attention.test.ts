import { describe, expect, it } from 'vitest';
import { estimateStageMemoryBytes } from '../../gpu/engine/stage-layout.js';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { FlashAttention } from '../../gpu/kernels/flash-attention.js';
import { flashTile } from '../../gpu/kernels/flash-attention-wgsl.js';
import * as ref from '../../gpu/reference/kernels.js';
import { TensorPack, fileDevice, maxAbsDiff, maxErrorRatio, randomArray } from './harness.js';

/*
 * Flash attention against the CPU reference (f64 inside). Tolerances: output within 1e-4 absolute + 1e-4
 * relative, the row log-sum-exp within 1e-4, dq, dk and dv (accumulated onto non-zero values) within 2e-4
 * absolute + 1e-3 relative: the online softmax rescales per tile, so sums round in another order than the
 * reference's softmax-then-sum.
 */
const gpu = fileDevice();

interface Case {
  B: number;
  T: number;
  C: number;
  NH: number;
}

/** The reference's forward and backward, plus each row's log-sum-exp of its scaled scores. */
function reference({ B, T, C, NH }: Case, qkv: Float32Array, dout: Float32Array, dqkv0: Float32Array) {
  const TT = B * NH * T * T;
  const out = new Float32Array(B * T * C);
  const preatt = new Float32Array(TT);
  const att = new Float32Array(TT);
  ref.attentionForward(out, preatt, att, qkv, B, T, C, NH);
  const lse = new Float32Array(B * NH * T);
  for (let r = 0; r < B * NH * T; r++) {
    const t = r % T;
    let max = -Infinity;
    for (let j = 0; j <= t; j++) max = Math.max(max, preatt[r * T + j]!);
    let sum = 0;
    for (let j = 0; j <= t; j++) sum += Math.exp(preatt[r * T + j]! - max);
    lse[r] = max + Math.log(sum);
  }
  const dqkv = dqkv0.slice();
  ref.attentionBackward(dqkv, new Float32Array(TT), new Float32Array(TT), dout, qkv, att, B, T, C, NH);
  return { out, lse, dqkv };
}

async function runFlash(
  k: FlashAttention,
  c: Case,
  qkv: Float32Array,
  dout: Float32Array,
  dqkv0: Float32Array,
) {
  const { B, T, C, NH } = c;
  const pack = new TensorPack(gpu.device, {
    qkv,
    dout,
    dqkv: dqkv0,
    out: B * T * C,
    lse: B * NH * T,
    delta: B * NH * T,
  });
  const r = (n: string) => pack.ref(n);
  const dims = c;
  await pack.run(
    k.forward({ out: r('out'), lse: r('lse'), qkv: r('qkv'), dims }),
    k.backward({
      dqkv: r('dqkv'),
      delta: r('delta'),
      dout: r('dout'),
      out: r('out'),
      qkv: r('qkv'),
      lse: r('lse'),
      dims,
    }),
  );
  const [out, lse, dqkv] = await Promise.all(['out', 'lse', 'dqkv'].map((n) => pack.read(n)));
  pack.buffer.destroy();
  return { out: out!, lse: lse!, dqkv: dqkv! };
}

function expectWithin(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  atol: number,
  rtol: number,
  what: string,
) {
  const ratio = maxErrorRatio(got, want, atol, rtol);
  expect(ratio, `${what}: worst error ${ratio.toFixed(2)}x the tolerance`).toBeLessThanOrEqual(1);
}

/** dq, dk, dv of packed (B, T, 3C) gradients, checked one section at a time so a failure names the part. */
function expectGradients(got: Float32Array, want: Float32Array, C: number, atol = 2e-4, rtol = 1e-3): void {
  ['dq', 'dk', 'dv'].forEach((name, s) => {
    const pick = (x: Float32Array) => x.filter((_, i) => Math.floor((i % (3 * C)) / C) === s);
    expectWithin(pick(got), pick(want), atol, rtol, name);
  });
}

describe('flash attention', () => {
  // Head sizes 8 and 32 run vec4 loads, 9 and 6 scalar ones; T = 8 is under one tile, 70 and 130 are not
  // multiples of the 64-row blocks or of any tile, and 130 crosses several tiles and blocks. (Head size 64, the
  // 768-wide model's, costs lavapipe ~25 CPU-seconds to compile, so it is left to the bench.)
  it.each([
    { B: 2, T: 8, C: 16, NH: 2 },
    { B: 1, T: 70, C: 18, NH: 2 },
    { B: 2, T: 130, C: 64, NH: 2 },
    { B: 1, T: 33, C: 6, NH: 1 },
  ])('matches the reference (B $B, T $T, C $C, NH $NH)', async (c) => {
    const { B, T, C } = c;
    const qkv = randomArray(B * T * 3 * C, 21, 1.5);
    const dout = randomArray(B * T * C, 22);
    const dqkv0 = randomArray(B * T * 3 * C, 23, 0.1);
    const want = reference(c, qkv, dout, dqkv0);
    const got = await runFlash(new FlashAttention(gpu.device), c, qkv, dout, dqkv0);
    expectWithin(got.out, want.out, 1e-4, 1e-4, 'out');
    expectWithin(got.lse, want.lse, 1e-4, 0, 'lse');
    expectGradients(got.dqkv, want.dqkv, C);
  });

  // Mixed precision: q, k, v and dout rounded to f16 (relative error 2^-11), products and sums in f32. Stated
  // tolerances: output and lse within 2e-3 absolute + 2e-3 relative, gradients within 3e-3 absolute + 3e-3
  // relative (measured worst errors, printed, are 2-6e-4); and the f16 rounding must show (error over 1e-5).
  it.each([
    { B: 2, T: 8, C: 16, NH: 2 },
    { B: 1, T: 70, C: 18, NH: 2 },
    { B: 2, T: 130, C: 64, NH: 2 },
  ])(
    'with f16 operands matches the reference within f16 tolerances (B $B, T $T, C $C, NH $NH)',
    async (c) => {
      expect(gpu.device.features.has('shader-f16'), 'lavapipe offers shader-f16').toBe(true);
      const { B, T, C } = c;
      const qkv = randomArray(B * T * 3 * C, 21, 1.5);
      const dout = randomArray(B * T * C, 22);
      const dqkv0 = randomArray(B * T * 3 * C, 23, 0.1);
      const want = reference(c, qkv, dout, dqkv0);
      const got = await runFlash(new FlashAttention(gpu.device, { f16: true }), c, qkv, dout, dqkv0);
      console.log(
        `f16 flash (T ${T}, C ${C}): max |error| out ${maxAbsDiff(got.out, want.out).toExponential(2)}, ` +
          `lse ${maxAbsDiff(got.lse, want.lse).toExponential(2)}, dqkv ${maxAbsDiff(got.dqkv, want.dqkv).toExponential(2)}`,
      );
      expect(maxAbsDiff(got.out, want.out)).toBeGreaterThan(1e-5);
      expectWithin(got.out, want.out, 2e-3, 2e-3, 'out');
      expectWithin(got.lse, want.lse, 2e-3, 2e-3, 'lse');
      expectGradients(got.dqkv, want.dqkv, C, 3e-3, 3e-3);
    },
  );

  it('gives the same bits every run', async () => {
    const c = { B: 1, T: 100, C: 16, NH: 2 };
    const qkv = randomArray(c.T * 3 * c.C, 31, 1.5);
    const dout = randomArray(c.T * c.C, 32);
    const dqkv0 = new Float32Array(c.T * 3 * c.C);
    const k = new FlashAttention(gpu.device);
    const a = await runFlash(k, c, qkv, dout, dqkv0);
    const b = await runFlash(k, c, qkv, dout, dqkv0);
    for (const name of ['out', 'lse', 'dqkv'] as const)
      expect(Buffer.from(a[name].buffer).equals(Buffer.from(b[name].buffer)), name).toBe(true);
  });

  it('shrinks the stage memory estimate: no T x T buffer, linear in T', () => {
    const config: GptConfig = {
      vocabSize: 256,
      contextLength: 1024,
      width: 768,
      heads: 12,
      layers: 12,
      mlpRatio: 4,
    };
    const limits = { maxBufferSize: 2 ** 50, maxStorageBufferBindingSize: 2 ** 50 };
    const estimate = (seq: number, kind: 'flash' | 'scores') =>
      estimateStageMemoryBytes(config, wholeModel(config), { batch: 8, seq }, limits, kind);
    const [flash, scores] = [estimate(1024, 'flash'), estimate(1024, 'scores')];
    console.log(
      `width 768, 12 layers, batch 8, seq 1024: ${(scores / 2 ** 30).toFixed(2)} GiB with scores, ${(flash / 2 ** 30).toFixed(2)} GiB with flash`,
    );
    // Each block's saved softmax and the shared score-gradient scratch, (B, NH, T, T) each, become (B, NH, T).
    const rows = 8 * 12 * 1024;
    expect(scores - flash).toBeGreaterThanOrEqual(13 * 4 * (rows * 1024 - rows));
    expect(scores - flash).toBeLessThan(13 * 4 * (rows * 1024 - rows) + 13 * 2 * 256);
    const curvature = estimate(1024, 'flash') - 2 * estimate(768, 'flash') + estimate(512, 'flash');
    expect(Math.abs(curvature)).toBeLessThan(1e-3 * flash);
  });

  it('sizes its tile to the workgroup memory', () => {
    expect(flashTile(64, 16384)).toBe(16);
    expect(flashTile(64, 32768)).toBe(32);
    expect(flashTile(8, 16384)).toBe(64);
    expect(() => flashTile(4096, 16384)).toThrow(/workgroup memory/);
  });
});
