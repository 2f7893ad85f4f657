/**
 * Waits until everything submitted to the queue so far has run, by mapping a buffer the last submission
 * writes (mapping an untouched buffer resolves at once; onSubmittedWorkDone aborted the process in some early
 * lavapipe runs, so the benchmarks keep to this).
 */
export async function drainQueue(device: GPUDevice): Promise<void> {
  const fence = device.createBuffer({ size: 4, usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST });
  const encoder = device.createCommandEncoder();
  encoder.clearBuffer(fence);
  device.queue.submit([encoder.finish()]);
  await fence.mapAsync(GPUMapMode.READ);
  fence.destroy();
}
