import type { EncodedOp } from '../../gpu/kernels/types.js';

/** Queries per query set (WebGPU's limit is 4096): two per op. */
const OPS_PER_SET = 2048;

/**
 * GPU time of each op, from `timestamp-query`: every op runs in its own compute pass whose start and end the
 * GPU stamps, so the numbers exclude the host's submits and waits. Milliseconds summed by `key(op)` over
 * `rounds` replays of `ops`, divided by `rounds`. The device must have the `timestamp-query` feature; Dawn
 * rounds timestamps unless its `timestamp_quantization` toggle is off (dawnGpu() turns it off).
 */
export async function gpuTimes(
  device: GPUDevice,
  ops: readonly EncodedOp[],
  rounds: number,
  key: (op: EncodedOp) => string,
): Promise<Map<string, number>> {
  const totals = new Map<string, number>();
  for (let round = 0; round < rounds; round++) {
    for (let from = 0; from < ops.length; from += OPS_PER_SET) {
      const slice = ops.slice(from, from + OPS_PER_SET);
      const ns = await stampedRun(device, slice);
      slice.forEach((op, i) => totals.set(key(op), (totals.get(key(op)) ?? 0) + ns[i]! / 1e6 / rounds));
    }
  }
  return totals;
}

/** Nanoseconds each op took on the GPU, one submission for all. */
async function stampedRun(device: GPUDevice, ops: readonly EncodedOp[]): Promise<number[]> {
  const count = 2 * ops.length;
  const querySet = device.createQuerySet({ type: 'timestamp', count });
  const resolved = device.createBuffer({
    size: count * 8,
    usage: GPUBufferUsage.QUERY_RESOLVE | GPUBufferUsage.COPY_SRC,
  });
  const readback = device.createBuffer({
    size: count * 8,
    usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
  });
  const encoder = device.createCommandEncoder();
  ops.forEach((op, i) => {
    const pass = encoder.beginComputePass({
      timestampWrites: { querySet, beginningOfPassWriteIndex: 2 * i, endOfPassWriteIndex: 2 * i + 1 },
    });
    op.encode(pass);
    pass.end();
  });
  encoder.resolveQuerySet(querySet, 0, count, resolved, 0);
  encoder.copyBufferToBuffer(resolved, 0, readback, 0, count * 8);
  device.queue.submit([encoder.finish()]);
  await readback.mapAsync(GPUMapMode.READ);
  const stamps = new BigUint64Array(readback.getMappedRange().slice(0));
  readback.destroy();
  resolved.destroy();
  querySet.destroy();
  return ops.map((_, i) => Number(stamps[2 * i + 1]! - stamps[2 * i]!));
}
