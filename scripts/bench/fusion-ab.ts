/**
 * The fused launches against the unfused ones they replace, on this adapter's GPU clock (timestamp-query):
 * `node --import tsx scripts/bench/fusion-ab.ts [rounds]`. Shapes of the bench:engine default config
 * (B·T = 256 rows, width 128, MLP 512): bias + GELU in the forward matmul, GELU's backward in the
 * input-gradient matmul (against the matmul, a zero-fill and geluBackward), and residual + LayerNorm.
 * Alternating rounds; prints each side's fastest and median GPU ms (on a shared CPU adapter the fastest is the
 * one other processes disturbed least).
 */
import { acquireDevice } from '../../gpu/device/acquire.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { EncodedOp, TensorRef } from '../../gpu/kernels/types.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { gpuTimes } from './gpu-timer.js';

const rounds = Number(process.argv[2] ?? 15);
const rows = 256;
const C = 128;
const H = 512;

const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
if (!device.features.has('timestamp-query')) throw new Error('this adapter offers no timestamp-query');
const k = new KernelSet(device);
const tensor = (floats: number): TensorRef => {
  const size = floats * 4;
  const buffer = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(
    buffer,
    0,
    new Float32Array(floats).map((_, i) => Math.sin(i) * 0.5),
  );
  return { buffer, offset: 0, size };
};
const t = {
  x: tensor(rows * C),
  w: tensor(H * C),
  b: tensor(H),
  pre: tensor(rows * H),
  act: tensor(rows * H),
  dact: tensor(rows * H),
  dpre: tensor(rows * H),
  dout: tensor(rows * C),
  w2: tensor(C * H),
  a: tensor(rows * C),
  res: tensor(rows * C),
  ln: tensor(rows * C),
  mean: tensor(rows),
  rstd: tensor(rows),
  g: tensor(C),
  beta: tensor(C),
};
const dims = { rows, inDim: C, outDim: H };
const down = { rows, inDim: H, outDim: C };
const ln = { out: t.ln, mean: t.mean, rstd: t.rstd, inp: t.res, weight: t.g, bias: t.beta, rows, C };
const pairs: Record<string, { unfused: EncodedOp[]; fused: EncodedOp[] }> = {
  'forward + bias + GELU': {
    unfused: [
      k.matmul.forward({ out: t.pre, inp: t.x, weight: t.w, bias: t.b, dims }),
      k.elementwise.gelu({ out: t.act, inp: t.pre, n: rows * H }),
    ],
    fused: [k.matmul.forward({ out: t.pre, inp: t.x, weight: t.w, bias: t.b, dims, gelu: t.act })],
  },
  'input gradient through GELU': {
    unfused: [
      k.matmul.backwardInput({ dinp: t.dact, dout: t.dout, weight: t.w2, dims: down, overwrite: true }),
      k.elementwise.zero({ out: t.dpre, n: rows * H }),
      k.elementwise.geluBackward({ dinp: t.dpre, inp: t.pre, dout: t.dact, n: rows * H }),
    ],
    fused: [
      k.matmul.backwardInput({
        dinp: t.dpre,
        dout: t.dout,
        weight: t.w2,
        dims: down,
        overwrite: true,
        geluInput: t.pre,
      }),
    ],
  },
  'residual + LayerNorm': {
    unfused: [k.elementwise.residual({ out: t.res, a: t.a, b: t.x, n: rows * C }), k.layernorm.forward(ln)],
    fused: [k.layernorm.forward({ ...ln, residual: { a: t.a, b: t.x } })],
  },
};
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const [name, { unfused, fused }] of Object.entries(pairs)) {
  const times = { unfused: [] as number[], fused: [] as number[] };
  await gpuTimes(device, [...unfused, ...fused], 2, (op) => op.label);
  for (let r = 0; r < rounds; r++) {
    for (const side of ['unfused', 'fused'] as const) {
      const ops = side === 'fused' ? fused : unfused;
      const ms = [...(await gpuTimes(device, ops, 1, (op) => op.label)).values()].reduce((a, b) => a + b, 0);
      times[side].push(ms);
    }
  }
  const show = (stat: (xs: number[]) => number) => {
    const u = stat(times.unfused);
    const f = stat(times.fused);
    return `unfused ${u.toFixed(3)} ms, fused ${f.toFixed(3)} ms (${(u / f).toFixed(2)}x)`;
  };
  console.log(
    `${name} (${unfused.length} launches -> ${fused.length}): fastest ${show((xs) => Math.min(...xs))}; median ${show(median)}`,
  );
}
device.destroy();
