/**
 * Engine benchmark: our WGSL matmul and whole training step against TF.js's WebGPU backend, both on the same
 * dawn.node adapter. `npm run bench:engine` prints a table; `npm run bench:engine -- --json` prints exactly
 * one JSON object on stdout (progress goes to stderr either way).
 */
import type * as Tf from '@tensorflow/tfjs';
import { acquireDevice, adapterName } from '../gpu/device/acquire.js';
import { GpuStage } from '../gpu/engine/gpu-stage.js';
import { type GptConfig, type MicroBatchShape, wholeModel } from '../gpu/model/config.js';
import { mulberry32 } from '../gpu/model/params.js';
import type { AdamWSettings } from '../gpu/stage/types.js';
import { type MicroBatch, Trainer } from '../gpu/train/trainer.js';
import { stageDeviceNeeds } from '../gpu/engine/stage-layout.js';
import { DRIVER_HINT, dawnGpu } from '../main/gpu-host/dawn.js';
import { compareMatmul } from './bench/matmul.js';
import { TfGpt } from './bench/tfjs-gpt.js';

const MATMUL_SIZES = [256, 512, 1024, 2048];
/** Alternating rounds per size (two at 2048, where one TF.js product takes tens of seconds on lavapipe). */
const MATMUL_ROUNDS = 3;

/** Small enough that a step takes about a second on lavapipe, big enough that matmuls dominate. */
const CONFIG: GptConfig = { vocabSize: 256, contextLength: 64, width: 128, heads: 4, layers: 4, mlpRatio: 4 };
const SHAPE: MicroBatchShape = { batch: 4, seq: 64 };
const ADAMW: AdamWSettings = { learningRate: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const GRAD_CLIP = 1;
const SEED = 1234;
const WARMUP_STEPS = 2;
const TIMED_STEPS = 5;
/**
 * Rounds of TIMED_STEPS steps, ours and TF.js alternating; each side's best round counts, so a burst of other
 * load on a shared machine does not decide the ratio.
 */
const TRAIN_ROUNDS = 5;

interface Report {
  adapter: string;
  /** Best of alternating rounds; *_per_cpu_s divides by this process's CPU time, which other load hardly moves. */
  matmul: {
    n: number;
    ours_gflops: number;
    tfjs_gflops: number;
    ours_gflops_per_cpu_s: number;
    tfjs_gflops_per_cpu_s: number;
    /** Present on CPU adapters, where `ours` is the lanes kernel: the tiled kernel real GPUs run. */
    ours_tiled_gflops?: number;
  }[];
  train_step: {
    config: GptConfig & MicroBatchShape & { microBatches: number; timedSteps: number; rounds: number };
    ours_tokens_per_s: number;
    tfjs_tokens_per_s: number;
  };
}

const json = process.argv.includes('--json');
const progress = (line: string) => process.stderr.write(`${line}\n`);
if (json) {
  // Libraries (TF.js among them) may log; in JSON mode stdout carries the report alone.
  console.log = console.info = console.debug = (...args: unknown[]) => console.error(...args);
}

function batches(count: number): MicroBatch[] {
  const rand = mulberry32(SEED);
  const n = SHAPE.batch * SHAPE.seq;
  const ids = () => Int32Array.from({ length: n }, () => Math.floor(rand() * CONFIG.vocabSize));
  return Array.from({ length: count }, () => ({ tokens: ids(), targets: ids() }));
}

/** One side of the training comparison: a step on the next micro-batch, returning its loss. */
interface TrainContender {
  step(b: MicroBatch): Promise<number>;
  dispose(): void;
}

interface TrainMeasure {
  tokensPerSecond: number;
  /** Loss of the first step: both sides start from the same weights and data, so these should agree. */
  firstLoss: number;
}

async function ourTrainer(device: GPUDevice): Promise<TrainContender> {
  const trainer = await Trainer.create({
    config: CONFIG,
    stageCount: 1,
    shape: SHAPE,
    microBatches: 1,
    adamw: ADAMW,
    gradClip: GRAD_CLIP,
    makeStage: (range) => GpuStage.create(device, CONFIG, range, SHAPE, { seed: SEED }),
  });
  return { step: async (b) => (await trainer.step([b])).loss, dispose: () => trainer.destroy() };
}

function tfjsTrainer(tf: typeof Tf): TrainContender {
  const model = new TfGpt(tf, { config: CONFIG, ...SHAPE, adamw: ADAMW, gradClip: GRAD_CLIP, seed: SEED });
  return { step: (b) => model.step(b.tokens, b.targets), dispose: () => model.dispose() };
}

/**
 * Both sides step through the same micro-batches: WARMUP_STEPS (the first gives the loss to compare), then
 * TRAIN_ROUNDS alternating rounds of TIMED_STEPS; tokens per second of each side's best round.
 */
async function compareTraining(sides: {
  ours: TrainContender;
  tfjs: TrainContender;
}): Promise<Record<'ours' | 'tfjs', TrainMeasure>> {
  const data = batches(WARMUP_STEPS + TRAIN_ROUNDS * TIMED_STEPS);
  const result = { ours: { tokensPerSecond: 0, firstLoss: 0 }, tfjs: { tokensPerSecond: 0, firstLoss: 0 } };
  for (const side of ['ours', 'tfjs'] as const) {
    result[side].firstLoss = await sides[side].step(data[0]!);
    for (const b of data.slice(1, WARMUP_STEPS)) await sides[side].step(b);
  }
  for (let round = 0; round < TRAIN_ROUNDS; round++) {
    const from = WARMUP_STEPS + round * TIMED_STEPS;
    for (const side of ['ours', 'tfjs'] as const) {
      const start = performance.now();
      for (const b of data.slice(from, from + TIMED_STEPS)) await sides[side].step(b);
      const tokensPerSecond = (TIMED_STEPS * SHAPE.batch * SHAPE.seq * 1e3) / (performance.now() - start);
      progress(`  round ${round + 1}, ${side}: ${tokensPerSecond.toFixed(1)} tokens/s`);
      result[side].tokensPerSecond = Math.max(result[side].tokensPerSecond, tokensPerSecond);
    }
  }
  return result;
}

/**
 * Collects a device's validation errors: a dispatch that fails validation is skipped, and a benchmark that
 * timed skipped work would report nonsense.
 */
function watchErrors(device: GPUDevice, who: string, errors: string[]): void {
  device.addEventListener('uncapturederror', (event) => {
    errors.push(`${who}: ${(event as GPUUncapturedErrorEvent).error.message}`);
  });
}

/** TF.js's WebGPU backend on dawn.node: it looks for navigator.gpu when its module loads. */
async function loadTfjs(gpu: GPU): Promise<typeof Tf> {
  Object.assign(globalThis, { navigator: { gpu } });
  const tf = await import('@tensorflow/tfjs');
  await import('@tensorflow/tfjs-backend-webgpu');
  if (!(await tf.setBackend('webgpu')))
    throw new Error("TF.js could not start its 'webgpu' backend on dawn.node");
  await tf.ready();
  return tf;
}

function printTable(r: Report): void {
  const fmt = (x: number, digits = 2) => x.toFixed(digits).padStart(10);
  const lines = [
    `adapter: ${r.adapter}`,
    '',
    'matmul, square n x n: GFLOP/s (best wall round) and GFLOP per CPU-second of this process',
    ['n', 'ours', 'TF.js', 'ratio', 'ours/cpu', 'TF.js/cpu', 'ratio', 'ours tiled']
      .map((h, i) => h.padStart(i === 0 ? 6 : i === 7 ? 12 : 10))
      .join(''),
    ...r.matmul.map(
      (m) =>
        String(m.n).padStart(6) +
        [m.ours_gflops, m.tfjs_gflops, m.ours_gflops / m.tfjs_gflops].map((x) => fmt(x)).join('') +
        [m.ours_gflops_per_cpu_s, m.tfjs_gflops_per_cpu_s, m.ours_gflops_per_cpu_s / m.tfjs_gflops_per_cpu_s]
          .map((x) => fmt(x))
          .join('') +
        (m.ours_tiled_gflops === undefined ? '' : fmt(m.ours_tiled_gflops).padStart(12)),
    ),
    ...(r.matmul.some((m) => m.ours_tiled_gflops !== undefined)
      ? ['("ours" is the lanes kernel this CPU adapter gets; "ours tiled" the kernel real GPUs run.)']
      : []),
    '',
    `train step (tokens/s), ${JSON.stringify(r.train_step.config)}`,
    `${'ours'.padStart(16)}${fmt(r.train_step.ours_tokens_per_s, 1)}`,
    `${'TF.js'.padStart(16)}${fmt(r.train_step.tfjs_tokens_per_s, 1)}`,
    `${'ratio'.padStart(16)}${fmt(r.train_step.ours_tokens_per_s / r.train_step.tfjs_tokens_per_s)}x`,
  ];
  console.log(lines.join('\n'));
}

async function main(): Promise<void> {
  const gpu = dawnGpu();
  const { device, summary } = await acquireDevice(
    gpu,
    DRIVER_HINT,
    stageDeviceNeeds(CONFIG, wholeModel(CONFIG), SHAPE),
  );
  const adapter = adapterName(summary);
  progress(`adapter: ${adapter}${summary.isFallback ? ' (software: says nothing about real GPUs)' : ''}`);
  const tf = await loadTfjs(gpu);
  const errors: string[] = [];
  watchErrors(device, 'ours', errors);
  watchErrors((tf.backend() as unknown as { device: GPUDevice }).device, 'TF.js', errors);

  const matmul: Report['matmul'] = [];
  for (const n of MATMUL_SIZES) {
    progress(`matmul n=${n} ...`);
    const { ours, tfjs, oursTiled } = await compareMatmul(device, tf, n, n >= 2048 ? 2 : MATMUL_ROUNDS);
    matmul.push({
      n,
      ours_gflops: ours.gflops,
      tfjs_gflops: tfjs.gflops,
      ours_gflops_per_cpu_s: ours.gflopsPerCpuSecond,
      tfjs_gflops_per_cpu_s: tfjs.gflopsPerCpuSecond,
      ...(oursTiled ? { ours_tiled_gflops: oursTiled.gflops } : {}),
    });
    const tiled = oursTiled ? `, ours tiled (the real-GPU kernel) ${oursTiled.gflops.toFixed(2)}` : '';
    progress(`  GFLOP/s: ours ${ours.gflops.toFixed(2)}, TF.js ${tfjs.gflops.toFixed(2)}${tiled}`);
  }

  progress(`train step: ${TRAIN_ROUNDS} alternating rounds of ${TIMED_STEPS} steps ...`);
  const sides = { ours: await ourTrainer(device), tfjs: tfjsTrainer(tf) };
  const { ours, tfjs } = await compareTraining(sides).finally(() => {
    sides.ours.dispose();
    sides.tfjs.dispose();
  });
  progress(`  first loss: ours ${ours.firstLoss.toFixed(6)}, TF.js ${tfjs.firstLoss.toFixed(6)}`);
  if (errors.length > 0)
    throw new Error(`GPU validation errors, the timings are void:\n${errors.slice(0, 3).join('\n')}`);
  if (Math.abs(ours.firstLoss - tfjs.firstLoss) > 1e-3 * Math.abs(tfjs.firstLoss)) {
    throw new Error(
      `the two models disagree at step 1 (loss ${ours.firstLoss} vs ${tfjs.firstLoss}): not the same GPT`,
    );
  }

  const report: Report = {
    adapter,
    matmul,
    train_step: {
      config: { ...CONFIG, ...SHAPE, microBatches: 1, timedSteps: TIMED_STEPS, rounds: TRAIN_ROUNDS },
      ours_tokens_per_s: ours.tokensPerSecond,
      tfjs_tokens_per_s: tfjs.tokensPerSecond,
    },
  };
  if (json) process.stdout.write(`${JSON.stringify(report)}\n`);
  else printTable(report);
  device.destroy();
  tf.engine().reset();
}

main().then(
  () => process.exit(0),
  (error: unknown) => {
    process.stderr.write(
      `bench:engine failed: ${error instanceof Error ? (error.stack ?? error.message) : String(error)}\n`,
    );
    process.exit(1);
  },
);
