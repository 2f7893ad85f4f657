import type { DeviceWatch } from '../device/lost.js';
import type { TensorRef } from '../kernels/types.js';
import type { PacedWait } from './paced-wait.js';

/**
 * Reads tensors back through one MAP_READ buffer created up front, in as few map round-trips as its size
 * allows. Work recorded by `before` goes in the same submission as the first copy.
 */
export class Readback {
  private readonly staging: GPUBuffer;

  constructor(
    private readonly device: GPUDevice,
    private readonly watch: DeviceWatch,
    readonly bytes: number,
    label: string,
    private readonly pace?: PacedWait,
  ) {
    this.staging = device.createBuffer({
      label: `${label} staging`,
      size: bytes,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
  }

  /**
   * The tensors' bytes, concatenated in order, as f32. With `paceKey` (a call site replaying the same work),
   * the first map waits through the PacedWait.
   */
  async read(
    refs: readonly TensorRef[],
    before?: (encoder: GPUCommandEncoder) => void,
    paceKey?: string,
  ): Promise<Float32Array> {
    const total = refs.reduce((n, r) => n + r.size, 0);
    const out = new Uint8Array(total);
    let next = 0;
    let written = 0;
    let pending = before;
    do {
      this.watch.check();
      const encoder = this.device.createCommandEncoder();
      pending?.(encoder);
      pending = undefined;
      let used = 0;
      while (next < refs.length && used + refs[next]!.size <= this.bytes) {
        const r = refs[next]!;
        encoder.copyBufferToBuffer(r.buffer, r.offset, this.staging, used, r.size);
        used += r.size;
        next++;
      }
      if (used === 0 && next < refs.length)
        throw new Error(
          `a ${refs[next]!.size}-byte tensor does not fit the ${this.bytes}-byte staging buffer`,
        );
      this.device.queue.submit([encoder.finish()]);
      const submitted = performance.now();
      if (used === 0) break;
      const map = () => this.watch.guard(this.staging.mapAsync(GPUMapMode.READ, 0, used));
      await (this.pace && paceKey !== undefined && written === 0
        ? this.pace.wait(paceKey, submitted, map)
        : map());
      out.set(new Uint8Array(this.staging.getMappedRange(0, used)), written);
      this.staging.unmap();
      written += used;
    } while (next < refs.length);
    return new Float32Array(out.buffer);
  }

  destroy(): void {
    this.staging.destroy();
  }
}
