import { Matmul } from '../../gpu/kernels/matmul.js';
import type { EncodedOp, TensorRef } from '../../gpu/kernels/types.js';
import { drainQueue } from './gpu-sync.js';

/** Products per measurement: enough to swamp submit overhead, few at big n so the bench stays short. */
export function iterationsFor(n: number): number {
  return Math.max(2, Math.round(3e9 / (2 * n ** 3)));
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

/**
 * Times `op` repeated `iters` times, one submit each, after one warm-up. Returns wall milliseconds and the
 * process's CPU milliseconds, which include lavapipe's worker threads.
 */
export async function timeOp(
  device: GPUDevice,
  op: EncodedOp,
  iters: number,
): Promise<{ ms: number; cpuMs: number }> {
  const submit = () => {
    const encoder = device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    op.encode(pass);
    pass.end();
    device.queue.submit([encoder.finish()]);
  };
  submit();
  await drainQueue(device);
  const cpu0 = process.cpuUsage();
  const start = performance.now();
  for (let i = 0; i < iters; i++) submit();
  await drainQueue(device);
  const cpu = process.cpuUsage(cpu0);
  return { ms: performance.now() - start, cpuMs: (cpu.user + cpu.system) / 1e3 };
}

/** GFLOP/s of our forward matmul out(n,n) = inp(n,n) · weight(n,n)^T, bias-free as TF.js's matMul. */
export async function benchOurMatmul(
  device: GPUDevice,
  n: number,
  iters = iterationsFor(n),
): Promise<number> {
  const inp = randomTensor(device, n * n);
  const weight = randomTensor(device, n * n);
  const out = randomTensor(device, n * n);
  const op = new Matmul(device).forward({
    out,
    inp,
    weight,
    bias: null,
    dims: { rows: n, inDim: n, outDim: n },
  });
  const { ms } = await timeOp(device, op, iters);
  for (const t of [inp, weight, out]) t.buffer.destroy();
  return gflops(n, iters, ms);
}

/** GFLOP/s of TF.js's tf.matMul(a, b, false, true) (the same product), synchronised by reading C back. */
export async function benchTfjsMatmul(
  tf: typeof import('@tensorflow/tfjs'),
  n: number,
  iters = iterationsFor(n),
): Promise<number> {
  const a = tf.randomUniform([n, n], -1, 1);
  const b = tf.randomUniform([n, n], -1, 1);
  const run = async (count: number) => {
    let last: import('@tensorflow/tfjs').Tensor | null = null;
    for (let i = 0; i < count; i++) {
      last?.dispose();
      last = tf.matMul(a, b, false, true);
    }
    await last!.data();
    last!.dispose();
  };
  await run(1);
  const start = performance.now();
  await run(iters);
  const ms = performance.now() - start;
  a.dispose();
  b.dispose();
  return gflops(n, iters, ms);
}
