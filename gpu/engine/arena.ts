import type { TensorRef } from '../kernels/types.js';

/** WebGPU's minStorageBufferOffsetAlignment upper bound: every tensor starts on a 256-byte boundary. */
export const ALIGN = 256;

export function alignUp(bytes: number, to = ALIGN): number {
  return Math.ceil(bytes / to) * to;
}

/** Where one tensor will live: buffer `buffer` of its role, at `offset`. */
export interface Slot {
  role: string;
  buffer: number;
  offset: number;
  bytes: number;
}

/**
 * Plans a few big buffers per role (weights, moments, activations...), tensors packed at aligned offsets,
 * starting a new buffer only when one would pass `maxBufferBytes`. The plan alone gives the exact bytes, so
 * memory is known before anything is allocated.
 */
export class ArenaPlan {
  private readonly sizes = new Map<string, number[]>();
  private largest = 0;

  constructor(
    private readonly maxBufferBytes: number,
    private readonly maxBindingBytes: number,
  ) {}

  add(role: string, floats: number, what: string): Slot {
    const bytes = floats * 4;
    if (bytes > this.maxBindingBytes) {
      throw new Error(
        `${what} needs ${bytes} bytes, over the device's ${this.maxBindingBytes}-byte storage binding limit`,
      );
    }
    this.largest = Math.max(this.largest, bytes);
    const buffers = this.sizes.get(role) ?? [0];
    this.sizes.set(role, buffers);
    let last = buffers.length - 1;
    if (buffers[last]! > 0 && buffers[last]! + bytes > this.maxBufferBytes) {
      buffers.push(0);
      last++;
    }
    const offset = buffers[last]!;
    buffers[last] = alignUp(offset + Math.max(bytes, 4));
    return { role, buffer: last, offset, bytes };
  }

  /** Every planned buffer's size, by role. */
  buffers(): { role: string; sizes: number[] }[] {
    return [...this.sizes].map(([role, sizes]) => ({ role, sizes: [...sizes] }));
  }

  largestTensorBytes(): number {
    return this.largest;
  }

  totalBytes(): number {
    let total = 0;
    for (const sizes of this.sizes.values()) for (const s of sizes) total += s;
    return total;
  }
}

/** The buffers of a plan, created once; slots become TensorRefs. */
export class Arena {
  private readonly buffers = new Map<string, GPUBuffer[]>();

  constructor(device: GPUDevice, plan: ArenaPlan, label: string) {
    for (const { role, sizes } of plan.buffers()) {
      this.buffers.set(
        role,
        sizes.map((size, i) =>
          device.createBuffer({
            label: `${label} ${role}.${i}`,
            size: Math.max(size, ALIGN),
            usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_SRC | GPUBufferUsage.COPY_DST,
          }),
        ),
      );
    }
  }

  ref(slot: Slot): TensorRef {
    const buffer = this.buffers.get(slot.role)?.[slot.buffer];
    if (!buffer) throw new Error(`no buffer ${slot.role}.${slot.buffer} in this arena`);
    return { buffer, offset: slot.offset, size: slot.bytes };
  }

  /** The buffers of some roles, in a fixed order (for whole-role copies such as activation stashes). */
  buffersOf(roles: readonly string[]): GPUBuffer[] {
    return roles.flatMap((role) => this.buffers.get(role) ?? []);
  }

  destroy(): void {
    for (const list of this.buffers.values()) for (const b of list) b.destroy();
    this.buffers.clear();
  }
}
