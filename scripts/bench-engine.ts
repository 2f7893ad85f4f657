/**
 * Engine benchmark: our WGSL matmul and whole training step against TF.js's WebGPU backend, both on the same
 * dawn.node adapter. `npm run bench:engine` prints a table; `npm run bench:engine -- --json` prints exactly
 * one JSON object on stdout (progress goes to stderr either way). `--config gpt2-768` trains width 768,
 * 12 layers, batch 8 at seq 256 and 1024 instead of the small default (scripts/bench/configs.ts).
 * Every measurement is sized by time (a few hundred ms of work), not by FLOPs, so a fast GPU is not timed on
 * launches and readbacks alone.
 */
import type * as Tf from '@tensorflow/tfjs';
import { acquireDevice, adapterName } from '../gpu/device/acquire.js';
import {
  type MatmulTuning,
  type Trial,
  type TuneResult,
  describeTuning,
  matmulOptions,
  modelProducts,
  tuneMatmul,
  tuningLogLine,
} from '../gpu/engine/autotune.js';
import { subgroupMatrixName, subgroupMatrixSupport } from '../gpu/kernels/matmul-subgroup-matrix.js';
import { GpuStage } from '../gpu/engine/gpu-stage.js';
import { KernelSet } from '../gpu/engine/kernel-set.js';
import { stageDeviceNeeds } from '../gpu/engine/stage-layout.js';
import { type GptConfig, type MicroBatchShape, wholeModel } from '../gpu/model/config.js';
import { stageTrainFlops } from '../gpu/model/flops.js';
import { mulberry32 } from '../gpu/model/params.js';
import type { AdamWSettings } from '../gpu/stage/types.js';
import { type MicroBatch, Trainer } from '../gpu/train/trainer.js';
import { DRIVER_HINT, dawnGpu } from '../main/gpu-host/dawn.js';
import { fileTuningStore } from '../main/gpu-host/tuning-store.js';
import { benchConfigFromArgs } from './bench/configs.js';
import { compareMatmul } from './bench/matmul.js';
import { TfGpt } from './bench/tfjs-gpt.js';

/** Square sizes: up to 8192 on a real GPU; on a CPU adapter one TF.js product at 2048 already takes ~10 s. */
const MATMUL_SIZES_GPU = [256, 512, 1024, 2048, 4096, 8192];
const MATMUL_SIZES_CPU = [256, 512, 1024, 2048];
/** Alternating rounds per size (two from 2048 up). */
const MATMUL_ROUNDS = 3;

const BENCH = benchConfigFromArgs(process.argv);
const CONFIG: GptConfig = BENCH.config;
const ADAMW: AdamWSettings = { learningRate: 3e-4, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const GRAD_CLIP = 1;
const SEED = 1234;
const WARMUP_STEPS = 2;
/** Wall time one timed round of train steps should take; the step count follows from a warm step's time. */
const ROUND_MS = 1500;
const MIN_ROUND_STEPS = 3;
/**
 * Rounds, ours and TF.js alternating; each side's best round counts, so a burst of other load on a shared
 * machine does not decide the ratio.
 */
const TRAIN_ROUNDS = BENCH.name === 'small' ? 5 : 3;

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
  /** The first sequence length's result (as before `train_steps`). */
  train_step: {
    config: GptConfig & MicroBatchShape & { microBatches: number; timedSteps: number; rounds: number };
    ours_tokens_per_s: number;
    tfjs_tokens_per_s: number;
  };
  config_name: string;
  train_steps: {
    seq: number;
    precision: 'fp32';
    ours_tokens_per_s: number;
    tfjs_tokens_per_s: number;
    /** Model FLOPs (matmuls and attention, 6N-style) per second of our best round. */
    ours_tflops: number;
    steps_per_round: number;
  }[];
  /** What the autotuner chose on this adapter, and whether it measured or read its cache. */
  matmul_kernels: TuningReport;
  /**
   * The mixed-precision (f16 operand) tuning, where the device has shader-f16 and is not a CPU adapter:
   * the only one with subgroup-matrix (tensor-core) candidates.
   */
  matmul_kernels_mixed: TuningReport | null;
  /** The subgroup-matrix tiles the adapter offers the autotuner, or why none. */
  subgroup_matrix: { candidates: string[]; reason: string | null };
}

type TuningReport = MatmulTuning & {
  source: 'cache' | 'measured';
  seconds: number;
  summary: string;
  /** Every candidate tried per product kind: its speed or why it was rejected (empty from the cache). */
  trials: Trial[];
};

function tuningReport(tuned: TuneResult): TuningReport {
  const { tuning, source, seconds, trials } = tuned;
  return { ...tuning, source, seconds, summary: describeTuning(tuning), trials };
}

/** The autotuner's line, then each candidate's result on its own line. */
function printTuning(tuned: TuneResult): void {
  progress(tuningLogLine(tuned));
  for (const t of tuned.trials) {
    const result = t.rejected === undefined ? `${t.gflops!.toFixed(1)} GFLOP/s` : `rejected: ${t.rejected}`;
    progress(`  ${t.kind} ${t.kernel}: ${result}`);
  }
}

const json = process.argv.includes('--json');
const progress = (line: string) => process.stderr.write(`${line}\n`);
if (json) {
  // Libraries (TF.js among them) may log; in JSON mode stdout carries the report alone.
  console.log = console.info = console.debug = (...args: unknown[]) => console.error(...args);
}

function batches(count: number, shape: MicroBatchShape): MicroBatch[] {
  const rand = mulberry32(SEED);
  const n = shape.batch * shape.seq;
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

async function ourTrainer(
  device: GPUDevice,
  kernels: KernelSet,
  shape: MicroBatchShape,
): Promise<TrainContender> {
  const trainer = await Trainer.create({
    config: CONFIG,
    stageCount: 1,
    shape,
    microBatches: 1,
    adamw: ADAMW,
    gradClip: GRAD_CLIP,
    makeStage: (range) => GpuStage.create(device, CONFIG, range, shape, { seed: SEED, kernels }),
  });
  return { step: async (b) => (await trainer.step([b])).loss, dispose: () => trainer.destroy() };
}

function tfjsTrainer(tf: typeof Tf, shape: MicroBatchShape): TrainContender {
  const model = new TfGpt(tf, { config: CONFIG, ...shape, adamw: ADAMW, gradClip: GRAD_CLIP, seed: SEED });
  return { step: (b) => model.step(b.tokens, b.targets), dispose: () => model.dispose() };
}

/**
 * Both sides step through the same micro-batches: WARMUP_STEPS (the first gives the loss to compare), then
 * TRAIN_ROUNDS alternating rounds of steps, as many as our warm step fits into ROUND_MS; tokens per second of
 * each side's best round.
 */
async function compareTraining(
  sides: { ours: TrainContender; tfjs: TrainContender },
  shape: MicroBatchShape,
): Promise<Record<'ours' | 'tfjs', TrainMeasure> & { stepsPerRound: number }> {
  const warm = batches(WARMUP_STEPS + 1, shape);
  const result = { ours: { tokensPerSecond: 0, firstLoss: 0 }, tfjs: { tokensPerSecond: 0, firstLoss: 0 } };
  for (const side of ['ours', 'tfjs'] as const) {
    result[side].firstLoss = await sides[side].step(warm[0]!);
    for (const b of warm.slice(1, WARMUP_STEPS)) await sides[side].step(b);
  }
  const t0 = performance.now();
  await sides.ours.step(warm[WARMUP_STEPS]!);
  const stepMs = performance.now() - t0;
  const steps = Math.max(MIN_ROUND_STEPS, Math.min(50, Math.ceil(ROUND_MS / stepMs)));
  const data = batches(TRAIN_ROUNDS * steps, shape);
  for (let round = 0; round < TRAIN_ROUNDS; round++) {
    const from = round * steps;
    for (const side of ['ours', 'tfjs'] as const) {
      const start = performance.now();
      for (const b of data.slice(from, from + steps)) await sides[side].step(b);
      const tokensPerSecond = (steps * shape.batch * shape.seq * 1e3) / (performance.now() - start);
      progress(`  round ${round + 1}, ${side}: ${tokensPerSecond.toFixed(1)} tokens/s (${steps} steps)`);
      result[side].tokensPerSecond = Math.max(result[side].tokensPerSecond, tokensPerSecond);
    }
  }
  return { ...result, stepsPerRound: steps };
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
  // Node 24 defines a getter-only navigator; replace it, as a page's would hold .gpu.
  Object.defineProperty(globalThis, 'navigator', { value: { gpu }, configurable: true });
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
    `matmul kernels (${r.matmul_kernels.source}): ${r.matmul_kernels.summary}`,
    r.matmul_kernels_mixed
      ? `matmul kernels, mixed precision (${r.matmul_kernels_mixed.source}): ${r.matmul_kernels_mixed.summary}`
      : 'matmul kernels, mixed precision: not tuned (no shader-f16, or a CPU adapter)',
    `subgroup-matrix candidates: ${r.subgroup_matrix.reason ?? r.subgroup_matrix.candidates.join('; ')}`,
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
    `train step, config ${r.config_name}: ${JSON.stringify({ ...CONFIG, batch: BENCH.batch })}`,
    ['seq', 'ours tok/s', 'TF.js tok/s', 'ratio', 'ours TFLOP/s']
      .map((h, i) => h.padStart(i === 0 ? 6 : 14))
      .join(''),
    ...r.train_steps.map(
      (t) =>
        String(t.seq).padStart(6) +
        [t.ours_tokens_per_s, t.tfjs_tokens_per_s].map((x) => x.toFixed(1).padStart(14)).join('') +
        `${(t.ours_tokens_per_s / t.tfjs_tokens_per_s).toFixed(2)}x`.padStart(14) +
        t.ours_tflops.toFixed(3).padStart(14),
    ),
  ];
  console.log(lines.join('\n'));
}

async function main(): Promise<void> {
  const gpu = dawnGpu();
  const longest: MicroBatchShape = { batch: BENCH.batch, seq: Math.max(...BENCH.seqs) };
  const { device, summary } = await acquireDevice(
    gpu,
    DRIVER_HINT,
    stageDeviceNeeds(CONFIG, wholeModel(CONFIG), longest),
  );
  const adapter = adapterName(summary);
  progress(`adapter: ${adapter}${summary.isFallback ? ' (software: says nothing about real GPUs)' : ''}`);
  const cacheAt = process.argv.indexOf('--tuning-cache');
  const tuneOptions = {
    products: modelProducts(CONFIG, { batch: BENCH.batch, seq: BENCH.seqs[0]! }),
    store: cacheAt >= 0 ? fileTuningStore(process.argv[cacheAt + 1]!) : undefined,
    log: progress,
  };
  const tuned = await tuneMatmul(device, tuneOptions);
  printTuning(tuned);
  // Mixed precision's f16 kernels (and the tensor-core candidates) are tuned on GPUs only: on a CPU adapter
  // every f16 tile is a slow compile and says nothing about a GPU.
  const tunedMixed =
    device.features.has('shader-f16') && !summary.isFallback
      ? await tuneMatmul(device, { ...tuneOptions, precision: 'mixed' })
      : null;
  if (tunedMixed) printTuning(tunedMixed);
  const subgroup = subgroupMatrixSupport(device);
  if (!tunedMixed)
    progress(`subgroup-matrix candidates: ${subgroup.reason ?? 'some (mixed precision not tuned)'}`);
  const kernels = new KernelSet(device, { matmul: matmulOptions(tuned.tuning) });
  const tf = await loadTfjs(gpu);
  const errors: string[] = [];
  watchErrors(device, 'ours', errors);
  watchErrors((tf.backend() as unknown as { device: GPUDevice }).device, 'TF.js', errors);

  const matmul: Report['matmul'] = [];
  for (const n of summary.isFallback ? MATMUL_SIZES_CPU : MATMUL_SIZES_GPU) {
    progress(`matmul n=${n} ...`);
    const { ours, tfjs, oursTiled } = await compareMatmul(
      device,
      tf,
      n,
      n >= 2048 ? 2 : MATMUL_ROUNDS,
      kernels.matmul,
    );
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

  const trainSteps: Report['train_steps'] = [];
  for (const seq of BENCH.seqs) {
    const shape: MicroBatchShape = { batch: BENCH.batch, seq };
    progress(`train step, seq ${seq}: ${TRAIN_ROUNDS} alternating rounds of about ${ROUND_MS} ms ...`);
    const sides = { ours: await ourTrainer(device, kernels, shape), tfjs: tfjsTrainer(tf, shape) };
    const { ours, tfjs, stepsPerRound } = await compareTraining(sides, shape).finally(() => {
      sides.ours.dispose();
      sides.tfjs.dispose();
    });
    progress(`  first loss: ours ${ours.firstLoss.toFixed(6)}, TF.js ${tfjs.firstLoss.toFixed(6)}`);
    if (Math.abs(ours.firstLoss - tfjs.firstLoss) > 1e-3 * Math.abs(tfjs.firstLoss)) {
      throw new Error(
        `the two models disagree at step 1 (loss ${ours.firstLoss} vs ${tfjs.firstLoss}): not the same GPT`,
      );
    }
    const flopsPerToken = stageTrainFlops(CONFIG, wholeModel(CONFIG), shape) / (shape.batch * shape.seq);
    trainSteps.push({
      seq,
      precision: 'fp32',
      ours_tokens_per_s: ours.tokensPerSecond,
      tfjs_tokens_per_s: tfjs.tokensPerSecond,
      ours_tflops: (ours.tokensPerSecond * flopsPerToken) / 1e12,
      steps_per_round: stepsPerRound,
    });
    // One JSON line a measurement on stderr, so a run cut off on a borrowed GPU still says something.
    progress(JSON.stringify({ train_step: trainSteps.at(-1) }));
  }
  if (errors.length > 0)
    throw new Error(`GPU validation errors, the timings are void:\n${errors.slice(0, 3).join('\n')}`);

  const first = trainSteps[0]!;
  const report: Report = {
    adapter,
    matmul,
    train_step: {
      config: {
        ...CONFIG,
        batch: BENCH.batch,
        seq: first.seq,
        microBatches: 1,
        timedSteps: first.steps_per_round,
        rounds: TRAIN_ROUNDS,
      },
      ours_tokens_per_s: first.ours_tokens_per_s,
      tfjs_tokens_per_s: first.tfjs_tokens_per_s,
    },
    config_name: BENCH.name,
    train_steps: trainSteps,
    matmul_kernels: tuningReport(tuned),
    matmul_kernels_mixed: tunedMixed ? tuningReport(tunedMixed) : null,
    subgroup_matrix: { candidates: subgroup.tiles.map(subgroupMatrixName), reason: subgroup.reason },
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
