/**
 * Where a training step's time goes on this adapter: `node --import tsx scripts/bench/step-profile.ts [steps]`
 * times whole Trainer steps of the bench:engine config (wall and this process's CPU time, lavapipe's threads
 * included), then the whole program in one submission, then each top-level op encoded REPEAT times in its own
 * submission, summed by label with digits folded (FULL=1 keeps shapes apart). STEP_ONLY=1 stops after the steps.
 */
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { type GptConfig, type MicroBatchShape } from '../../gpu/model/config.js';
import { mulberry32 } from '../../gpu/model/params.js';
import type { EncodedOp } from '../../gpu/kernels/types.js';
import { type MicroBatch, Trainer } from '../../gpu/train/trainer.js';
import { acquireDevice } from '../../gpu/device/acquire.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { drainQueue } from './gpu-sync.js';

const CONFIG: GptConfig = { vocabSize: 256, contextLength: 64, width: 128, heads: 4, layers: 4, mlpRatio: 4 };
const SHAPE: MicroBatchShape = { batch: 4, seq: 64 };
const steps = Number(process.argv[2] ?? 6);
/** Each op is encoded this many times in one pass, so per-submission overhead drops out. */
const REPEAT = 5;

const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
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
  makeStage: (range) => GpuStage.create(device, CONFIG, range, SHAPE, { seed: 1234 }),
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
{
  await drainQueue(device);
  const t0 = performance.now();
  for (let r = 0; r < steps; r++) {
    const enc = device.createCommandEncoder();
    const pass = enc.beginComputePass();
    for (const op of ops) op.encode(pass);
    pass.end();
    device.queue.submit([enc.finish()]);
  }
  await drainQueue(device);
  console.log(
    `whole step in one submission, no readbacks: ${((performance.now() - t0) / steps).toFixed(1)} ms`,
  );
}
const totals = new Map<string, number>();
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
    const key = process.env.FULL ? op.label : op.label.replace(/\d+/g, '#');
    if (round > 0) totals.set(key, (totals.get(key) ?? 0) + (performance.now() - t0) / 2 / REPEAT);
  }
}
const sum = [...totals.values()].reduce((a, b) => a + b, 0);
for (const [k, v] of [...totals].sort((a, b) => b[1] - a[1]))
  console.log(`${k.padEnd(40)} ${v.toFixed(1).padStart(8)} ms ${((100 * v) / sum).toFixed(0).padStart(4)}%`);
console.log(`sum of ops ${sum.toFixed(1)} ms`);
trainer.destroy();
device.destroy();
