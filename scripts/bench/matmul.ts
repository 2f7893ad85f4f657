import type * as Tf from '@tensorflow/tfjs';
import { Matmul } from '../../gpu/kernels/matmul.js';
import type { EncodedOp, TensorRef } from '../../gpu/kernels/types.js';
import { drainQueue } from './gpu-sync.js';

/**
 * Wall time one measurement should take. Sized by time, not FLOPs: a fixed 2 GFLOP is well under a millisecond
 * on a big GPU, which then times launches and readbacks instead of the product.
 */
const MEASURE_MS = 300;

/** Products for a measurement of about MEASURE_MS, from one warm product's rate. */
function iterationsFor(n: number, warm: Rate): number {
  const onceMs = (2 * n ** 3) / (warm.gflops * 1e6);
  return Math.max(1, Math.min(10_000, Math.round(MEASURE_MS / onceMs)));
}

/** Speed of a timed batch: per wall second, and per CPU second of this process (lavapipe's threads included). */
export interface Rate {
  gflops: number;
  gflopsPerCpuSecond: number;
}

/** Runs `work` and rates it: CPU time hardly moves when other processes load the machine, wall time does. */
async function rate(flops: number, work: () => Promise<void>): Promise<Rate> {
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  await work();
  const ms = performance.now() - start;
  const cpu = process.cpuUsage(cpu0);
  return { gflops: flops / (ms * 1e6), gflopsPerCpuSecond: flops / ((cpu.user + cpu.system) * 1e3) };
}

function randomTensor(device: GPUDevice, elements: number): TensorRef {
  const data = new Float32Array(elements).map(() => Math.random() * 2 - 1);
  const buffer = device.createBuffer({
    size: data.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(buffer, 0, data);
  return { buffer, offset: 0, size: data.byteLength };
}

function submitOp(device: GPUDevice, op: EncodedOp): void {
  const encoder = device.createCommandEncoder();
  const pass = encoder.beginComputePass();
  op.encode(pass);
  pass.end();
  device.queue.submit([encoder.finish()]);
}

/** Rates `op` (of `flops` each) repeated `iters` times, one submit each; the caller warms it up first. */
export function rateOp(device: GPUDevice, op: EncodedOp, flops: number, iters: number): Promise<Rate> {
  return rate(flops * iters, async () => {
    for (let i = 0; i < iters; i++) submitOp(device, op);
    await drainQueue(device);
  });
}

/** One side of the n x n comparison, warmed up: each measure() times a fresh batch of products. */
export interface MatmulContender {
  /** Rates `iters` products, synchronised by waiting for the device at the end. */
  measure(iters: number): Promise<Rate>;
  dispose(): void;
  /** How many products make one measurement, from a warm product's time. */
  iters: number;
}

async function warmed(c: Omit<MatmulContender, 'iters'>, n: number): Promise<MatmulContender> {
  // The first product includes compiles; a second sizes the measurement, unless the first alone was long.
  const first = await c.measure(1);
  const long = (2 * n ** 3) / (first.gflops * 1e6) >= MEASURE_MS;
  return { ...c, iters: iterationsFor(n, long ? first : await c.measure(1)) };
}

/** Our forward matmul out(n,n) = inp(n,n) · weight(n,n)^T, bias-free like TF.js's matMul. */
export function ourMatmul(device: GPUDevice, n: number, matmul: Matmul): Promise<MatmulContender> {
  const inp = randomTensor(device, n * n);
  const weight = randomTensor(device, n * n);
  const out = randomTensor(device, n * n);
  const dims = { rows: n, inDim: n, outDim: n };
  const op = matmul.forward({ out, inp, weight, bias: null, dims });
  return warmed(
    {
      measure: (iters) => rateOp(device, op, 2 * n ** 3, iters),
      dispose() {
        for (const t of [inp, weight, out]) t.buffer.destroy();
      },
    },
    n,
  );
}

/** TF.js's tf.matMul(a, b, false, true), the same product, synchronised by reading the last result back. */
export function tfjsMatmul(tf: typeof Tf, n: number): Promise<MatmulContender> {
  const a = tf.randomUniform([n, n], -1, 1);
  const b = tf.randomUniform([n, n], -1, 1);
  return warmed(
    {
      measure: (iters) =>
        rate(2 * n ** 3 * iters, async () => {
          let last: Tf.Tensor | null = null;
          for (let i = 0; i < iters; i++) {
            last?.dispose();
            last = tf.matMul(a, b, false, true);
          }
          await last!.data();
          last!.dispose();
        }),
      dispose() {
        a.dispose();
        b.dispose();
      },
    },
    n,
  );
}

/** Best rounds at one size: ours, TF.js, and our tiled kernel when `ours` ran the lanes kernel instead. */
export interface MatmulComparison {
  ours: Rate;
  tfjs: Rate;
  /** The kernel real GPUs run, measured too when the adapter gets the lanes kernel (CPU adapters). */
  oursTiled: Rate | null;
}

/**
 * The contenders at one size, measured in alternating rounds so that load from other processes on the
 * machine hits them alike; the best round of each counts.
 */
export async function compareMatmul(
  device: GPUDevice,
  tf: typeof Tf,
  n: number,
  rounds: number,
  matmul: Matmul,
): Promise<MatmulComparison> {
  const contenders: Record<string, MatmulContender> = {
    ours: await ourMatmul(device, n, matmul),
    tfjs: await tfjsMatmul(tf, n),
  };
  if (matmul.lanes !== null)
    contenders.oursTiled = await ourMatmul(
      device,
      n,
      new Matmul(device, { lanes: null, tiles: matmul.tiles, maxDispatchFlops: matmul.maxDispatchFlops }),
    );
  const best: Record<string, Rate> = {};
  for (let r = 0; r < rounds; r++) {
    for (const [side, contender] of Object.entries(contenders)) {
      const got = await contender.measure(contender.iters);
      best[side] = {
        gflops: Math.max(best[side]?.gflops ?? 0, got.gflops),
        gflopsPerCpuSecond: Math.max(best[side]?.gflopsPerCpuSecond ?? 0, got.gflopsPerCpuSecond),
      };
    }
  }
  for (const c of Object.values(contenders)) c.dispose();
  return { ours: best.ours!, tfjs: best.tfjs!, oursTiled: best.oursTiled ?? null };
}
