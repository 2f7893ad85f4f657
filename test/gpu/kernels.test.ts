import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AdamW } from '../../gpu/kernels/adamw.js';
import { Attention } from '../../gpu/kernels/attention.js';
import { cpuSubgroupLanes } from '../../gpu/kernels/lanes.js';
import { CrossEntropy } from '../../gpu/kernels/crossentropy.js';
import { Elementwise } from '../../gpu/kernels/elementwise.js';
import { Encoder } from '../../gpu/kernels/encoder.js';
import { LayerNorm } from '../../gpu/kernels/layernorm.js';
import { Reduce, partialCount } from '../../gpu/kernels/reduce.js';
import * as ref from '../../gpu/reference/kernels.js';
import { testDevice } from '../helpers/gpu.js';
import { TensorPack, maxErrorRatio, randomArray, randomTokens } from './harness.js';

/*
 * Every WGSL kernel against the CPU reference (f64 inside, f32 storage). Forward outputs must agree within
 * 1e-3 absolute; gradients within the per-tensor tolerances stated at each check. Backward kernels
 * accumulate, so gradients start from non-zero values to prove they add rather than overwrite.
 */
const B = 2;
const T = 8;
const C = 16;
const NH = 2;
const V = 40;
const BT = B * T;

let device: GPUDevice;
beforeAll(async () => {
  ({ device } = await testDevice());
});
afterAll(() => device?.destroy());

function expectClose(
  got: ArrayLike<number>,
  want: ArrayLike<number>,
  atol: number,
  rtol: number,
  what: string,
): void {
  const ratio = maxErrorRatio(got, want, atol, rtol);
  expect(
    ratio,
    `${what}: worst error is ${ratio.toFixed(3)}x the tolerance (atol ${atol}, rtol ${rtol})`,
  ).toBeLessThanOrEqual(1);
}

describe('WGSL kernels vs the CPU reference', () => {
  it('encoder forward and backward', async () => {
    const tokens = randomTokens(BT, V, 1);
    const wte = randomArray(V * C, 2);
    const wpe = randomArray(T * C, 3);
    const dout = randomArray(BT * C, 4);
    const dwte0 = randomArray(V * C, 5, 0.1);
    const dwpe0 = randomArray(T * C, 6, 0.1);
    const pack = new TensorPack(device, { tokens, wte, wpe, dout, out: BT * C, dwte: dwte0, dwpe: dwpe0 });
    const k = new Encoder(device);
    const dims = { B, T, C, vocab: V };
    const r = (n: string) => pack.ref(n);
    await pack.run(
      k.forward({ out: r('out'), tokens: r('tokens'), wte: r('wte'), wpe: r('wpe'), dims }),
      k.backward({ dwte: r('dwte'), dwpe: r('dwpe'), dout: r('dout'), tokens: r('tokens'), dims }),
    );
    const out = new Float32Array(BT * C);
    ref.encoderForward(out, tokens, wte, wpe, B, T, C);
    const dwte = dwte0.slice();
    const dwpe = dwpe0.slice();
    ref.encoderBackward(dwte, dwpe, dout, tokens, B, T, C);
    expectClose(await pack.read('out'), out, 1e-6, 0, 'encoder out');
    expectClose(await pack.read('dwte'), dwte, 1e-5, 1e-5, 'dwte');
    expectClose(await pack.read('dwpe'), dwpe, 1e-5, 1e-5, 'dwpe');
  });

  // C = 16 runs the vec4 shaders, 6 the scalar ones.
  it.each([C, 6])('layernorm forward and backward (C %i)', async (C) => {
    const inp = randomArray(BT * C, 7, 2);
    const weight = randomArray(C, 8);
    const bias = randomArray(C, 9);
    const dout = randomArray(BT * C, 10);
    const dinp0 = randomArray(BT * C, 11, 0.1);
    const dw0 = randomArray(C, 12, 0.1);
    const db0 = randomArray(C, 13, 0.1);
    const pack = new TensorPack(device, {
      inp,
      weight,
      bias,
      dout,
      out: BT * C,
      mean: BT,
      rstd: BT,
      dinp: dinp0,
      dw: dw0,
      db: db0,
    });
    const k = new LayerNorm(device);
    const r = (n: string) => pack.ref(n);
    await pack.run(
      k.forward({
        out: r('out'),
        mean: r('mean'),
        rstd: r('rstd'),
        inp: r('inp'),
        weight: r('weight'),
        bias: r('bias'),
        rows: BT,
        C,
      }),
      k.backward({
        dinp: r('dinp'),
        dweight: r('dw'),
        dbias: r('db'),
        dout: r('dout'),
        inp: r('inp'),
        weight: r('weight'),
        mean: r('mean'),
        rstd: r('rstd'),
        rows: BT,
        C,
      }),
    );
    const out = new Float32Array(BT * C);
    const mean = new Float32Array(BT);
    const rstd = new Float32Array(BT);
    ref.layernormForward(out, mean, rstd, inp, weight, bias, B, T, C);
    const [dinp, dw, db] = [dinp0.slice(), dw0.slice(), db0.slice()];
    ref.layernormBackward(dinp, dw, db, dout, inp, weight, mean, rstd, B, T, C);
    expectClose(await pack.read('out'), out, 1e-3, 0, 'layernorm out');
    expectClose(await pack.read('mean'), mean, 1e-5, 1e-5, 'mean');
    expectClose(await pack.read('rstd'), rstd, 1e-5, 1e-4, 'rstd');
    expectClose(await pack.read('dinp'), dinp, 1e-4, 1e-4, 'layernorm dinp');
    expectClose(await pack.read('dw'), dw, 1e-4, 1e-4, 'layernorm dweight');
    expectClose(await pack.read('db'), db, 1e-5, 1e-5, 'layernorm dbias');
  });

  // Head size 8 runs the vec4 shaders, 3 the scalar ones; with lanes (lavapipe's subgroups), the lanes shaders
  // serve head sizes divisible by 4 when T is a multiple of the subgroup size: 16 and 64 (two chunks a lane)
  // at T = 16 put two subgroups on each head.
  it.each([
    { C, NH, T, lanes: false },
    { C, NH, T, lanes: true },
    { C: 6, NH: 2, T, lanes: true },
    { C: 32, NH: 2, T: 16, lanes: true },
    { C: 128, NH: 2, T: 16, lanes: true },
  ])(
    'causal attention forward and backward (C $C, NH $NH, T $T, lanes $lanes)',
    async ({ C, NH, T, lanes }) => {
      const BT = B * T;
      const qkv = randomArray(BT * 3 * C, 14, 1.5);
      const dout = randomArray(BT * C, 15);
      const dqkv0 = randomArray(BT * 3 * C, 16, 0.1);
      const TT = B * NH * T * T;
      const pack = new TensorPack(device, { qkv, dout, out: BT * C, att: TT, dpreatt: TT, dqkv: dqkv0 });
      const k = new Attention(device, lanes ? {} : { lanes: null });
      if (lanes) expect(k.lanes).toBe(cpuSubgroupLanes(device));
      const dims = { B, T, C, NH };
      const r = (n: string) => pack.ref(n);
      await pack.run(
        k.forward({ out: r('out'), att: r('att'), qkv: r('qkv'), dims }),
        k.backward({
          dqkv: r('dqkv'),
          dpreatt: r('dpreatt'),
          dout: r('dout'),
          qkv: r('qkv'),
          att: r('att'),
          dims,
        }),
      );
      const out = new Float32Array(BT * C);
      const preatt = new Float32Array(TT);
      const att = new Float32Array(TT);
      ref.attentionForward(out, preatt, att, qkv, B, T, C, NH);
      const dqkv = dqkv0.slice();
      ref.attentionBackward(dqkv, new Float32Array(TT), new Float32Array(TT), dout, qkv, att, B, T, C, NH);
      expectClose(await pack.read('out'), out, 1e-3, 0, 'attention out');
      expectClose(await pack.read('att'), att, 1e-5, 1e-4, 'att');
      expectClose(await pack.read('dqkv'), dqkv, 1e-4, 1e-4, 'dqkv');
    },
  );

  it('attention: the lanes shaders give the same bits as the one-thread-per-position ones', async () => {
    const [C, NH, T] = [64, 2, 16];
    const BT = B * T;
    const TT = B * NH * T * T;
    const qkv = randomArray(BT * 3 * C, 40, 1.5);
    const dout = randomArray(BT * C, 41);
    const results: Float32Array[][] = [];
    for (const lanes of [undefined, null]) {
      const pack = new TensorPack(device, { qkv, dout, out: BT * C, att: TT, dpreatt: TT, dqkv: BT * 3 * C });
      const k = new Attention(device, { lanes });
      const r = (n: string) => pack.ref(n);
      const dims = { B, T, C, NH };
      await pack.run(
        k.forward({ out: r('out'), att: r('att'), qkv: r('qkv'), dims }),
        k.backward({
          dqkv: r('dqkv'),
          dpreatt: r('dpreatt'),
          dout: r('dout'),
          qkv: r('qkv'),
          att: r('att'),
          dims,
        }),
      );
      results.push(await Promise.all(['out', 'att', 'dqkv'].map((n) => pack.read(n))));
      pack.buffer.destroy();
    }
    expect(new Attention(device).lanes).not.toBeNull();
    results[0]!.forEach((x, i) =>
      expect(Buffer.from(x.buffer).equals(Buffer.from(results[1]![i]!.buffer))).toBe(true),
    );
  });

  // 1000 runs the vec4 shaders, 1001 the scalar ones; zero-fill runs between nonzero neighbours.
  it.each([1000, 1001])('GELU, residual and zero-fill over %i elements', async (n) => {
    const inp = randomArray(n, 17, 6);
    const other = randomArray(n, 18);
    const dout = randomArray(n, 19);
    const d0 = randomArray(n, 20, 0.1);
    const d1 = randomArray(n, 21, 0.1);
    const pack = new TensorPack(device, {
      inp,
      other,
      dout,
      gelu: n,
      dgelu: d0,
      sum: n,
      da: d0,
      db: d1,
      zeroed: d1,
    });
    const k = new Elementwise(device);
    const r = (x: string) => pack.ref(x);
    await pack.run(
      k.zero({ out: r('zeroed'), n: n - 4 }),
      k.gelu({ out: r('gelu'), inp: r('inp'), n }),
      k.geluBackward({ dinp: r('dgelu'), inp: r('inp'), dout: r('dout'), n }),
      k.residual({ out: r('sum'), a: r('inp'), b: r('other'), n }),
      k.residualBackward({ da: r('da'), db: r('db'), dout: r('dout'), n }),
    );
    const gelu = new Float32Array(n);
    ref.geluForward(gelu, inp, n);
    const dgelu = d0.slice();
    ref.geluBackward(dgelu, inp, dout, n);
    const sum = new Float32Array(n);
    ref.residualForward(sum, inp, other, n);
    const [da, db] = [d0.slice(), d1.slice()];
    ref.residualBackward(da, db, dout, n);
    expectClose(await pack.read('gelu'), gelu, 1e-5, 1e-5, 'gelu');
    expectClose(await pack.read('dgelu'), dgelu, 1e-5, 1e-4, 'gelu dinp');
    expectClose(await pack.read('sum'), sum, 1e-6, 0, 'residual');
    expectClose(await pack.read('da'), da, 1e-6, 0, 'residual da');
    expectClose(await pack.read('db'), db, 1e-6, 0, 'residual db');
    const zeroed = d1.slice();
    zeroed.fill(0, 0, n - 4);
    expect(Array.from(await pack.read('zeroed'))).toEqual(Array.from(zeroed));
  });

  it('softmax + cross-entropy forward and fused backward', async () => {
    const logits = randomArray(BT * V, 22, 4);
    const targets = randomTokens(BT, V, 23);
    const d0 = randomArray(BT * V, 24, 0.1);
    const pack = new TensorPack(device, { logits, targets, probs: BT * V, losses: BT, dlogits: d0 });
    const k = new CrossEntropy(device);
    const r = (x: string) => pack.ref(x);
    const bwd = k.backward({ dlogits: r('dlogits'), probs: r('probs'), targets: r('targets'), rows: BT, V });
    const dloss = 0.37 / BT;
    bwd.setScale(dloss);
    await pack.run(
      k.forward({
        probs: r('probs'),
        losses: r('losses'),
        logits: r('logits'),
        targets: r('targets'),
        rows: BT,
        V,
      }),
      bwd,
    );
    const probs = new Float32Array(BT * V);
    ref.softmaxForward(probs, logits, B, T, V);
    const losses = new Float32Array(BT);
    ref.crossentropyForward(losses, probs, targets, B, T, V);
    const dlogits = d0.slice();
    ref.crossentropySoftmaxBackward(dlogits, new Float32Array(BT).fill(dloss), probs, targets, B, T, V);
    expectClose(await pack.read('probs'), probs, 1e-6, 1e-4, 'probs');
    expectClose(await pack.read('losses'), losses, 1e-3, 0, 'losses');
    expectClose(await pack.read('dlogits'), dlogits, 1e-6, 1e-4, 'dlogits');
  });

  // Packed by role (params, then grads, ...) the tensors share one launch, as in a stage; packed by tensor the
  // roles' ranges would overlap, which WebGPU refuses to bind writable, so each tensor gets its own launch.
  // Lengths all divisible by 4 run the vec4 shader; 301 the scalar one.
  it.each([
    { packing: 'by role', lengths: [700, 300], launches: 1 },
    { packing: 'by role', lengths: [700, 301], launches: 1 },
    { packing: 'by tensor', lengths: [700, 300], launches: 2 },
  ])(
    'AdamW with decoupled weight decay, bias correction and a gradient scale, $lengths packed $packing',
    async ({ packing, lengths, launches }) => {
      // Two tensors, one decaying and one not, the second not a whole number of workgroups.
      const settings = { learningRate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
      const init: Record<string, Float32Array> = {};
      const roles = ['param', 'grad', 'm', 'v'];
      const fill = (role: string, t: number) => {
        const n = lengths[t]!;
        const seed = 25 + 2 * roles.indexOf(role) + t;
        init[`${role}${t}`] =
          role === 'm'
            ? randomArray(n, seed, 0.1)
            : role === 'v'
              ? randomArray(n, seed, 0.1).map(Math.abs)
              : randomArray(n, seed);
      };
      if (packing === 'by role') for (const role of roles) lengths.forEach((_, t) => fill(role, t));
      else lengths.forEach((_, t) => roles.forEach((role) => fill(role, t)));
      const pack = new TensorPack(device, init);
      const k = new AdamW(device);
      const r = (x: string) => pack.ref(x);
      k.setStep(settings, 3, 0.5);
      const tensors = lengths.map((n, t) => ({
        param: r(`param${t}`),
        grad: r(`grad${t}`),
        m: r(`m${t}`),
        v: r(`v${t}`),
        n,
        decay: t === 0,
      }));
      const ops = k.updateAll(tensors);
      expect(ops).toHaveLength(launches);
      await pack.run(...ops);
      for (const [t, n] of lengths.entries()) {
        const [p, m, v] = [init[`param${t}`]!.slice(), init[`m${t}`]!.slice(), init[`v${t}`]!.slice()];
        ref.adamwUpdate(p, init[`grad${t}`]!, m, v, 3, settings, t === 0, 0.5);
        expect(p.length).toBe(n);
        expectClose(await pack.read(`param${t}`), p, 1e-6, 1e-5, `adamw param ${t}`);
        expectClose(await pack.read(`m${t}`), m, 1e-7, 1e-5, `adamw m ${t}`);
        expectClose(await pack.read(`v${t}`), v, 1e-7, 1e-5, `adamw v ${t}`);
      }
      pack.buffer.destroy();
    },
  );

  // With a second input of 77 elements the partials read scalars; with 80, every length divides by 4 and they
  // read vec4s. Either way all inputs share one partial launch.
  it.each([77, 80])(
    'sums of squares over several tensors (second of %i) are deterministic and flag NaN and Inf by bit test',
    async (nb) => {
      const a = randomArray(10_000, 29);
      const b = randomArray(nb, 30, 3);
      const count = partialCount(a.length) + partialCount(b.length);
      const bad = b.slice();
      bad[5] = NaN;
      const inf = b.slice();
      inf[70] = -Infinity;
      const pack = new TensorPack(device, {
        a,
        b,
        bad,
        inf,
        partials: count,
        flags: count,
        r1: 2,
        r2: 2,
        r3: 2,
        r4: 2,
      });
      const k = new Reduce(device);
      const r = (x: string) => pack.ref(x);
      const sum = (result: string, second: string) =>
        k.sum({
          result: r(result),
          partials: r('partials'),
          flags: r('flags'),
          inputs: [
            { ref: r('a'), n: a.length },
            { ref: r(second), n: b.length },
          ],
          square: true,
          scale: 1,
        });
      await pack.run(sum('r1', 'b'), sum('r2', 'b'), sum('r3', 'bad'), sum('r4', 'inf'));
      const want = ref.squaredNorm(a) + ref.squaredNorm(b);
      const [r1, r2, r3, r4] = await Promise.all(['r1', 'r2', 'r3', 'r4'].map((x) => pack.readU32(x)));
      const value = (u: Uint32Array) => new Float32Array(u.buffer)[0]!;
      expect(Math.abs(value(r1!) - want) / want).toBeLessThan(1e-5);
      expect(r1![0]).toBe(r2![0]);
      expect([r1![1], r3![1], r4![1]]).toEqual([0, 1, 1]);
    },
  );
});
