import { readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseRunConfig } from '../../coordinator/run-config.js';
import { requestAdapter } from '../../gpu/device/acquire.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import { Matmul } from '../../gpu/kernels/matmul.js';
import * as ref from '../../gpu/reference/kernels.js';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import { NonFiniteError } from '../../gpu/stage/checks.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import { WindowSampler, byteCorpus } from '../../gpu/train/data.js';
import { LossScaler, type LossScaling } from '../../gpu/train/loss-scaler.js';
import { Trainer, type MicroBatch } from '../../gpu/train/trainer.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { TensorPack, fileDevice, maxAbsDiff, maxErrorRatio, randomArray, randomTokens } from './harness.js';

/*
 * Mixed precision: f16 operands with f32 accumulation (flash attention), f32 master weights and AdamW state,
 * dynamic loss scaling in the Trainer. Held to the CPU reference (f64 inside, f32 storage) with the
 * tolerances stated at each check, and to an fp32 run on tinyshakespeare.
 */
const dev = fileDevice();
const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const adamw = { learningRate: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const batches = (n: number, cfg = config, shp = shape): MicroBatch[] =>
  Array.from({ length: n }, (_, i) => ({
    tokens: randomTokens(shp.batch * shp.seq, cfg.vocabSize, 300 + i),
    targets: randomTokens(shp.batch * shp.seq, cfg.vocabSize, 400 + i),
  }));

function trainer<S extends StageTrainer>(
  makeStage: (range: StageRange) => Promise<S> | S,
  lossScaling?: LossScaling,
  stageCount = 1,
) {
  return Trainer.create({
    config,
    stageCount,
    shape,
    microBatches: 2,
    adamw,
    gradClip: 1,
    makeStage,
    ...(lossScaling ? { lossScaling } : {}),
  });
}

const mixedKernels = (): KernelSet => new KernelSet(dev.device, { precision: 'mixed' });
/** A GPU trainer in mixed precision. */
const mixedTrainer = (seed: number, lossScaling: LossScaling, stageCount = 1) => {
  const kernels = mixedKernels();
  return trainer(
    (range) => GpuStage.create(dev.device, config, range, shape, { seed, kernels }),
    lossScaling,
    stageCount,
  );
};
const flat = async (t: Trainer<StageTrainer>): Promise<Float32Array[]> =>
  (await t.exportState()).flatMap((s) => s.params.map((p) => p.data));

describe('dynamic loss scaling', () => {
  it('halves on overflow, doubles after growthInterval clean steps, and says when it is at its minimum', () => {
    const s = new LossScaler({ initial: 8, growthInterval: 2, min: 2, max: 16 });
    s.cleanStep();
    expect(s.scale).toBe(8);
    s.cleanStep();
    expect(s.scale).toBe(16);
    s.cleanStep();
    s.cleanStep();
    expect(s.scale).toBe(16);
    expect(s.overflow()).toBe(true);
    expect(s.scale).toBe(8);
    s.cleanStep();
    expect(s.overflow()).toBe(true);
    s.cleanStep();
    expect(s.scale).toBe(4);
    expect(s.overflow()).toBe(true);
    expect(s.overflow()).toBe(false);
    expect(s.scale).toBe(2);
    expect(() => new LossScaler({ initial: 3 })).toThrow(/power of two/);
    expect(() => new LossScaler({ growthInterval: 0 })).toThrow(/growthInterval/);
  });

  it('is exact: a CPU run with power-of-two scales gives the bits of an unscaled run', async () => {
    const make = () => new CpuStage(config, { index: 0, count: 1, firstBlock: 0, endBlock: 2 }, shape, 5);
    const plain = await trainer(make);
    const scaled = await trainer(make, { initial: 2 ** 12, growthInterval: 2 });
    for (let i = 0; i < 3; i++) {
      const [a, b] = [await plain.step(batches(2)), await scaled.step(batches(2))];
      expect(b.skipped).toBe(false);
      expect(b.loss).toBe(a.loss);
      expect(b.gradNorm).toBe(a.gradNorm);
    }
    const [pa, pb] = [await flat(plain), await flat(scaled)];
    pa.forEach((x, i) => expect(Buffer.from(x.buffer).equals(Buffer.from(pb[i]!.buffer))).toBe(true));
  });

  // With two stages the overflow also shows in the input gradient stage 2 hands back, checked on the host.
  it.each([1, 2])(
    'skips the update and halves the scale when f16 gradients overflow, then trains on (%i stages)',
    async (stages) => {
      const t = await mixedTrainer(5, { initial: 2 ** 40, max: 2 ** 40, growthInterval: 1000 }, stages);
      try {
        const results = [];
        for (let i = 0; i < 30; i++) {
          const before = await flat(t);
          const r = await t.step(batches(2));
          results.push(r);
          const after = await flat(t);
          const moved = after.some((x, j) => maxAbsDiff(x, before[j]!) > 0);
          expect(moved, `step ${i}: an update exactly when not skipped`).toBe(!r.skipped);
          if (!r.skipped) break;
        }
        const last = results.at(-1)!;
        console.log(
          `overflow backoff (${stages} stages): ${results.length - 1} skipped steps, 2^40 -> 2^${Math.log2(last.lossScale)} (f16 max 65504)`,
        );
        expect(results.length).toBeGreaterThan(1);
        expect(last.skipped).toBe(false);
        expect(results.map((r) => r.lossScale)).toEqual(results.map((_, i) => 2 ** (40 - i)));
      } finally {
        t.destroy();
      }
    },
  );

  it('keeps the NaN/Inf guard: an overflow at the minimum scale throws', async () => {
    const t = await mixedTrainer(5, {
      initial: 2 ** 40,
      min: 2 ** 40,
      max: 2 ** 40,
    });
    try {
      await expect(t.step(batches(2))).rejects.toBeInstanceOf(NonFiniteError);
    } finally {
      t.destroy();
    }
  });
});

function wholeModelRange() {
  return { index: 0, count: 1, firstBlock: 0, endBlock: config.layers };
}

describe('the device', () => {
  it('mixed precision on a device without shader-f16 fails at once, saying why', async () => {
    const adapter = await requestAdapter(dawnGpu(), DRIVER_HINT);
    const device = await adapter.requestDevice();
    try {
      expect(device.features.has('shader-f16')).toBe(false);
      expect(() => new KernelSet(device, { precision: 'mixed' })).toThrow(/shader-f16/);
    } finally {
      device.destroy();
    }
  });
});

describe('the run config', () => {
  it('takes precision, fp32 by default, and a loss scale that is a power of two up to 2^24', () => {
    expect(parseRunConfig({}).precision).toBe('fp32');
    const mixed = parseRunConfig({ precision: 'mixed' });
    expect(mixed.lossScaling).toEqual({ initial: 2 ** 16, growthInterval: 200 });
    expect(() => parseRunConfig({ precision: 'bf16' })).toThrow(/precision/);
    expect(() => parseRunConfig({ precision: 'mixed', lossScaling: { initial: 1000 } })).toThrow(
      /power of two/,
    );
    expect(() => parseRunConfig({ precision: 'mixed', lossScaling: { initial: 2 ** 25 } })).toThrow();
  });
});

describe('mixed precision against the CPU reference', () => {
  it('tracks the fp32 CPU reference over 3 steps with loss scaling', async () => {
    const kernels = mixedKernels();
    expect(kernels.attentionKind).toBe('flash');
    expect(kernels.flashAttention.f16).toBe(true);
    expect(kernels.matmul.f16).toBe(true);
    const gpu = await trainer(
      () => GpuStage.create(dev.device, config, wholeModelRange(), shape, { seed: 9, kernels }),
      { initial: 2 ** 12 },
    );
    const cpu = await trainer(() => new CpuStage(config, wholeModelRange(), shape, 9));
    let worst = 0;
    try {
      for (let i = 0; i < 3; i++) {
        const micro = batches(2).map((b, j) => ({
          ...b,
          tokens: randomTokens(b.tokens.length, 64, 10 * i + j),
        }));
        const [g, c] = [await gpu.step(micro), await cpu.step(micro)];
        // Stated tolerances: loss within 1e-3 relative, gradient norm within 1e-2 relative, and, at the first
        // step (same weights on both sides; after it AdamW's sign-driven first updates let them part by ~lr),
        // each gradient tensor (unscaled) within 5e-3 of its largest fp32 entry: f16 operands carry 11 bits.
        expect(g.skipped).toBe(false);
        expect(Math.abs(g.loss - c.loss) / c.loss, `step ${i} loss ${g.loss} vs ${c.loss}`).toBeLessThan(
          1e-3,
        );
        expect(Math.abs(g.gradNorm - c.gradNorm) / c.gradNorm).toBeLessThan(1e-2);
        if (i > 0) continue;
        const [gg, cg] = [await gpu.stages[0]!.exportGrads(), await cpu.stages[0]!.exportGrads()];
        let offset = 0;
        for (const p of (await cpu.exportState())[0]!.params) {
          const n = p.data.length;
          const want = cg.subarray(offset, offset + n);
          const got = gg.subarray(offset, offset + n).map((x) => x / g.lossScale);
          offset += n;
          const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
          const diff = maxAbsDiff(got, want);
          worst = Math.max(worst, diff / scale);
          expect(diff, `step ${i} gradient ${p.name}`).toBeLessThanOrEqual(5e-3 * scale + 1e-7);
        }
      }
      console.log(
        `mixed vs CPU fp32, first step: worst gradient difference ${worst.toExponential(2)} of its tensor's largest entry`,
      );
    } finally {
      gpu.destroy();
      cpu.destroy();
    }
  }, 120_000);
});

const corpusPath = resolve(import.meta.dirname, '..', '..', '..', 'shared', 'data', 'tinyshakespeare.txt');

describe('mixed-precision training on tinyshakespeare', () => {
  /*
   * Width 64, 2 blocks, 4 heads, 4 x 64 tokens a step, 40 steps, fp32 flash attention against f16-operand flash
   * attention with loss scaling, same seed and batches. Stated tolerance: every step's loss within 0.05 of
   * fp32's and the mean of the last 10 within 0.02 (measured differences are printed).
   */
  it('learns like fp32', async () => {
    const cfg: GptConfig = { vocabSize: 256, contextLength: 64, width: 64, heads: 4, layers: 2, mlpRatio: 4 };
    const shp: MicroBatchShape = { batch: 4, seq: 64 };
    const { train } = byteCorpus(readFileSync(corpusPath, 'utf8'));
    const curves: number[][] = [];
    for (const kernels of [
      new KernelSet(dev.device, { attention: 'flash' }),
      new KernelSet(dev.device, { precision: 'mixed' }),
    ]) {
      const mixed = kernels.flashAttention.f16;
      const t = await Trainer.create({
        config: cfg,
        stageCount: 1,
        shape: shp,
        microBatches: 1,
        adamw,
        gradClip: 1,
        makeStage: (range) => GpuStage.create(dev.device, cfg, range, shp, { seed: 1, kernels }),
        ...(mixed ? { lossScaling: { growthInterval: 10 } } : {}),
      });
      const sampler = new WindowSampler(train, shp, 42);
      const losses: number[] = [];
      try {
        for (let i = 0; i < 40; i++) {
          const r = await t.step([sampler.next()]);
          expect(r.skipped).toBe(false);
          losses.push(r.loss);
        }
      } finally {
        t.destroy();
      }
      console.log(`${mixed ? 'mixed' : 'fp32 '} loss curve: ${losses.map((l) => l.toFixed(3)).join(' ')}`);
      curves.push(losses);
    }
    const [fp32, mixed] = curves as [number[], number[]];
    const worst = Math.max(...fp32.map((l, i) => Math.abs(l - mixed[i]!)));
    const tail = (c: number[]) => c.slice(-10).reduce((a, b) => a + b, 0) / 10;
    console.log(
      `largest per-step difference ${worst.toFixed(4)}; last-10 means ${tail(fp32).toFixed(4)} vs ${tail(mixed).toFixed(4)}`,
    );
    expect(tail(fp32)).toBeLessThan(3.3);
    expect(worst).toBeLessThan(0.05);
    expect(Math.abs(tail(fp32) - tail(mixed))).toBeLessThan(0.02);
  }, 300_000);
});

describe('matmul with f16 operands', () => {
  // Stated tolerances against the f64-inside reference: out and dinp within 5e-3 absolute + 5e-3 relative,
  // dweight (a sum over all rows) within 1e-2 + 1e-2, dbias (column sums, not a product: f32) 1e-5 + 1e-4;
  // the f16 rounding must show. Measured worst errors are printed (e.g. 9e-4, 1.4e-3, 3.2e-3 at 70 x 36 -> 52).
  it.each([
    { rows: 70, inDim: 36, outDim: 52 },
    { rows: 33, inDim: 18, outDim: 10 },
  ])(
    'forward, backward input and backward weight ($rows x $inDim -> $outDim)',
    async ({ rows, inDim, outDim }) => {
      const inp = randomArray(rows * inDim, 1);
      const weight = randomArray(outDim * inDim, 2, 0.5);
      const bias = randomArray(outDim, 3);
      const dout = randomArray(rows * outDim, 4);
      const dinp0 = randomArray(rows * inDim, 5, 0.1);
      const dweight0 = randomArray(outDim * inDim, 6, 0.1);
      const dbias0 = randomArray(outDim, 7, 0.1);
      const pack = new TensorPack(dev.device, {
        ...{ inp, weight, bias, dout, dinp: dinp0, dweight: dweight0, dbias: dbias0 },
        out: rows * outDim,
      });
      const r = (n: string) => pack.ref(n);
      const m = new Matmul(dev.device, { f16: true });
      expect(m.lanes).toBeNull();
      const dims = { rows, inDim, outDim };
      await pack.run(
        m.forward({ out: r('out'), inp: r('inp'), weight: r('weight'), bias: r('bias'), dims }),
        m.backwardInput({ dinp: r('dinp'), dout: r('dout'), weight: r('weight'), dims }),
        m.backwardWeight({ dweight: r('dweight'), dbias: r('dbias'), dout: r('dout'), inp: r('inp'), dims }),
      );
      const out = new Float32Array(rows * outDim);
      ref.matmulForward(out, inp, weight, bias, 1, rows, inDim, outDim);
      const [dinp, dweight, dbias] = [dinp0.slice(), dweight0.slice(), dbias0.slice()];
      ref.matmulBackward(dinp, dweight, dbias, dout, inp, weight, 1, rows, inDim, outDim);
      const checks = [
        ['out', out, 5e-3, 5e-3],
        ['dinp', dinp, 5e-3, 5e-3],
        ['dweight', dweight, 1e-2, 1e-2],
        ['dbias', dbias, 1e-5, 1e-4],
      ] as const;
      const errors: string[] = [];
      for (const [name, want, atol, rtol] of checks) {
        const got = await pack.read(name);
        errors.push(`${name} ${maxAbsDiff(got, want).toExponential(1)}`);
        if (name !== 'dbias')
          expect(maxAbsDiff(got, want), `${name}: f16 rounding shows`).toBeGreaterThan(1e-5);
        expect(maxErrorRatio(got, want, atol, rtol), name).toBeLessThanOrEqual(1);
      }
      console.log(`f16 matmul ${rows} x ${inDim} -> ${outDim}: max |error| ${errors.join(', ')}`);
      pack.buffer.destroy();
    },
  );
});
