import type * as Tf from '@tensorflow/tfjs';
import { Matmul } from '../../gpu/kernels/matmul.js';
import type { EncodedOp, TensorRef } from '../../gpu/kernels/types.js';
import { drainQueue } from './gpu-sync.js';

/** Products per measurement: enough to swamp submit overhead, few at big n so the bench stays short. */
export function iterationsFor(n: number): number {
  return Math.max(1, Math.round(2e9 / (2 * n ** 3)));
}

function gflops(n: number, iters: number, ms: number): number {
  return (2 * n ** 3 * iters) / (ms * 1e6);
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

/**
 * Times `op` repeated `iters` times, one submit each, after one warm-up. Returns wall milliseconds and the
 * process's CPU milliseconds, which include lavapipe's worker threads.
 */
export async function timeOp(
  device: GPUDevice,
  op: EncodedOp,
  iters: number,
): Promise<{ ms: number; cpuMs: number }> {
  submitOp(device, op);
  await drainQueue(device);
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < iters; i++) submitOp(device, op);
  await drainQueue(device);
  const cpu = process.cpuUsage(cpu0);
  return { ms: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1e3 };
}

/** One side of the n x n comparison, warmed up: each measure() times a fresh batch of products. */
export interface MatmulContender {
  /** GFLOP/s over `iters` products, synchronised by waiting for the device at the end. */
  measure(iters: number): Promise<number>;
  dispose(): void;
}

async function warmed(c: MatmulContender): Promise<MatmulContender> {
  await c.measure(1);
  return c;
}

/** Our forward matmul out(n,n) = inp(n,n) · weight(n,n)^T, bias-free like TF.js's matMul. */
export function ourMatmul(device: GPUDevice, n: number): Promise<MatmulContender> {
  const inp = randomTensor(device, n * n);
  const weight = randomTensor(device, n * n);
  const out = randomTensor(device, n * n);
  const dims = { rows: n, inDim: n, outDim: n };
  const op = new Matmul(device).forward({ out, inp, weight, bias: null, dims });
  return warmed({
    async measure(iters) {
      const start = performance.now();
      for (let i = 0; i < iters; i++) submitOp(device, op);
      await drainQueue(device);
      return gflops(n, iters, performance.now() - start);
    },
    dispose() {
      for (const t of [inp, weight, out]) t.buffer.destroy();
    },
  });
}

/** TF.js's tf.matMul(a, b, false, true), the same product, synchronised by reading the last result back. */
export function tfjsMatmul(tf: typeof Tf, n: number): Promise<MatmulContender> {
  const a = tf.randomUniform([n, n], -1, 1);
  const b = tf.randomUniform([n, n], -1, 1);
  return warmed({
    async measure(iters) {
      const start = performance.now();
      let last: Tf.Tensor | null = null;
      for (let i = 0; i < iters; i++) {
        last?.dispose();
        last = tf.matMul(a, b, false, true);
      }
      await last!.data();
      last!.dispose();
      return gflops(n, iters, performance.now() - start);
    },
    dispose() {
      a.dispose();
      b.dispose();
    },
  });
}

/**
 * Both contenders at one size, measured in alternating rounds so that load from other processes on the
 * machine hits both alike; the best round of each counts.
 */
export async function compareMatmul(
  device: GPUDevice,
  tf: typeof Tf,
  n: number,
  rounds: number,
): Promise<{ ours: number; tfjs: number }> {
  const ours = await ourMatmul(device, n);
  const theirs = await tfjsMatmul(tf, n);
  const best = { ours: 0, tfjs: 0 };
  const iters = iterationsFor(n);
  for (let r = 0; r < rounds; r++) {
    best.ours = Math.max(best.ours, await ours.measure(iters));
    best.tfjs = Math.max(best.tfjs, await theirs.measure(iters));
  }
  ours.dispose();
  theirs.dispose();
  return best;
}
