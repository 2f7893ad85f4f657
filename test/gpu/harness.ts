import { afterAll, beforeAll } from 'vitest';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { EncodedOp, TensorRef } from '../../gpu/kernels/types.js';
import { testDevice } from '../helpers/gpu.js';

/**
 * Packs test tensors into one GPU buffer at 256-byte aligned offsets (as the engine does), runs ops and reads
 * tensors back.
 */
export class TensorPack {
  readonly buffer: GPUBuffer;
  private readonly refs = new Map<string, TensorRef>();

  constructor(
    private readonly device: GPUDevice,
    tensors: Record<string, Float32Array | Int32Array | number>,
  ) {
    let offset = 0;
    const placed = Object.entries(tensors).map(([name, t]) => {
      const n = typeof t === 'number' ? t : t.length;
      const at = offset;
      offset += Math.ceil((n * 4) / 256) * 256;
      return { name, at, n, data: typeof t === 'number' ? null : t };
    });
    this.buffer = device.createBuffer({
      size: Math.max(offset, 256),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
    });
    for (const { name, at, n, data } of placed) {
      this.refs.set(name, { buffer: this.buffer, offset: at, size: n * 4 });
      if (data) device.queue.writeBuffer(this.buffer, at, data.buffer, data.byteOffset, data.byteLength);
    }
  }

  ref(name: string): TensorRef {
    const r = this.refs.get(name);
    if (!r) throw new Error(`no tensor ${name}`);
    return r;
  }

  async run(...ops: EncodedOp[]): Promise<void> {
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (const op of ops) op.encode(pass);
    pass.end();
    this.device.queue.submit([encoder.finish()]);
  }

  async read(name: string): Promise<Float32Array> {
    const ref = this.ref(name);
    const staging = this.device.createBuffer({
      size: ref.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    const encoder = this.device.createCommandEncoder();
    encoder.copyBufferToBuffer(ref.buffer, ref.offset, staging, 0, ref.size);
    this.device.queue.submit([encoder.finish()]);
    await staging.mapAsync(GPUMapMode.READ);
    const out = new Float32Array(staging.getMappedRange().slice(0));
    staging.unmap();
    staging.destroy();
    return out;
  }

  async readU32(name: string): Promise<Uint32Array> {
    return new Uint32Array((await this.read(name)).buffer);
  }
}

/** Largest |a - b| / (atol + rtol |b|) ratio; <= 1 means within tolerance. */
export function maxErrorRatio(a: ArrayLike<number>, b: ArrayLike<number>, atol: number, rtol = 0): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++)
    worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / (atol + rtol * Math.abs(b[i]!)));
  return worst;
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} != ${b.length}`);
  let worst = 0;
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!));
  return worst;
}

/** Seeded uniform values in [-scale, scale). */
export function randomArray(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = (s / 4294967296 - 0.5) * 2 * scale;
  }
  return out;
}

export function randomTokens(n: number, vocab: number, seed: number): Int32Array {
  return Int32Array.from(randomArray(n, seed), (x) => Math.min(vocab - 1, Math.floor(((x + 1) / 2) * vocab)));
}

/**
 * One dawn.node device for a whole test file, destroyed after it, with two compiled kernel sets: the default
 * (lanes kernels on lavapipe) and the workgroup-memory kernels that real GPUs run.
 */
export function fileDevice(): {
  readonly device: GPUDevice;
  readonly kernels: KernelSet;
  readonly gpuKernels: KernelSet;
} {
  const held: { device?: GPUDevice; kernels?: KernelSet; gpuKernels?: KernelSet } = {};
  beforeAll(async () => {
    held.device = (await testDevice()).device;
    held.kernels = new KernelSet(held.device);
    held.gpuKernels = new KernelSet(held.device, { lanes: null });
  });
  afterAll(() => held.device?.destroy());
  return {
    get device() {
      return held.device!;
    },
    get kernels() {
      return held.kernels!;
    },
    get gpuKernels() {
      return held.gpuKernels!;
    },
  };
}
