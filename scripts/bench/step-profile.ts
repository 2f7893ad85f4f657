/**
 * Where a training step's time goes on this adapter:
 * `node --import tsx scripts/bench/step-profile.ts [steps] [--config small|gpt2-768]` times whole Trainer
 * steps (wall and this process's CPU time, lavapipe's threads included) at the config's first sequence length,
 * then each top-level op's GPU time from `timestamp-query` (each op in its own compute pass, stamped by the
 * GPU), summed by label with digits folded (FULL=1 keeps shapes apart). Adapters without timestamps get host
 * times instead: each op encoded REPEAT times in its own submission. STEP_ONLY=1 stops after the steps.
 */
import { acquireDevice } from '../../gpu/device/acquire.js';
import { describeTuning, matmulOptions, modelProducts, tuneMatmul } from '../../gpu/engine/autotune.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { EncodedOp } from '../../gpu/kernels/types.js';
import type { MicroBatchShape } from '../../gpu/model/config.js';
import { mulberry32 } from '../../gpu/model/params.js';
import { type MicroBatch, Trainer } from '../../gpu/train/trainer.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { benchConfigFromArgs } from './configs.js';
import { drainQueue } from './gpu-sync.js';
import { gpuTimes } from './gpu-timer.js';

const bench = benchConfigFromArgs(process.argv);
const CONFIG = bench.config;
const SHAPE: MicroBatchShape = { batch: bench.batch, seq: bench.seqs[0]! };
const steps = Number(process.argv.slice(2).find((a) => /^\d+$/.test(a)) ?? 6);
/** Host timing only: each op is encoded this many times in one pass, so per-submission overhead drops out. */
const REPEAT = 5;

const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
const tuned = await tuneMatmul(device, { products: modelProducts(CONFIG, SHAPE) });
console.log(`matmul kernels: ${describeTuning(tuned.tuning)}`);
const kernels = new KernelSet(device, { matmul: matmulOptions(tuned.tuning) });
const rand = mulberry32(1);
const ids = () =>
  Int32Array.from({ length: SHAPE.batch * SHAPE.seq }, () => Math.floor(rand() * CONFIG.vocabSize));
const data: MicroBatch[] = Array.from({ length: steps + 2 }, () => ({ tokens: ids(), targets: ids() }));
const trainer = await Trainer.create({
  config: CONFIG,
  stageCount: 1,
  shape: SHAPE,
  microBatches: 1,
  adamw: { learningRate: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
  gradClip: 1,
  makeStage: (range) => GpuStage.create(device, CONFIG, range, SHAPE, { seed: 1234, kernels }),
});
for (const b of data.slice(0, 2)) await trainer.step([b]);
const start = performance.now();
const cpu0 = process.cpuUsage();
for (const b of data.slice(2)) await trainer.step([b]);
const ms = (performance.now() - start) / steps;
const cpu = process.cpuUsage(cpu0);
const cpuMs = (cpu.user + cpu.system) / 1e3 / steps;
console.log(
  `step ${ms.toFixed(1)} ms (${cpuMs.toFixed(1)} CPU-ms), ${((SHAPE.batch * SHAPE.seq * 1000) / ms).toFixed(0)} tokens/s`,
);
if (process.env.STEP_ONLY) process.exit(0);

const program = (
  trainer.stages[0] as unknown as {
    program: { forward: EncodedOp[]; backward: EncodedOp[]; norm: EncodedOp; adamw: EncodedOp[] };
  }
).program;
const ops = [...program.forward, ...program.backward, program.norm, ...program.adamw];
const key = (op: EncodedOp) => (process.env.FULL ? op.label : op.label.replace(/\d+/g, '#'));
let totals: Map<string, number>;
let source: string;
if (device.features.has('timestamp-query')) {
  await gpuTimes(device, ops, 1, key);
  totals = await gpuTimes(device, ops, steps, key);
  source = `GPU time per step from timestamp-query, ${steps} steps, each op in its own pass`;
} else {
  totals = new Map();
  for (let round = 0; round < 3; round++) {
    for (const op of ops) {
      await drainQueue(device);
      const t0 = performance.now();
      const enc = device.createCommandEncoder();
      const pass = enc.beginComputePass();
      for (let r = 0; r < REPEAT; r++) op.encode(pass);
      pass.end();
      device.queue.submit([enc.finish()]);
      await drainQueue(device);
      if (round > 0) totals.set(key(op), (totals.get(key(op)) ?? 0) + (performance.now() - t0) / 2 / REPEAT);
    }
  }
  source = 'host time per step (this adapter has no timestamp-query)';
}
const sum = [...totals.values()].reduce((a, b) => a + b, 0);
console.log(`${source}:`);
for (const [k, v] of [...totals].sort((a, b) => b[1] - a[1]))
  console.log(`${k.padEnd(44)} ${v.toFixed(2).padStart(9)} ms ${((100 * v) / sum).toFixed(0).padStart(4)}%`);
console.log(`sum of ops ${sum.toFixed(1)} ms, ${ops.length} launches`);
trainer.destroy();
device.destroy();
