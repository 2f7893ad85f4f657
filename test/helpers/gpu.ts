import { requestAdapter, wantedFeatures } from '../../gpu/device/acquire.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';

/**
 * A real device on dawn.node (lavapipe in CI). A missing adapter fails the test with what to install:
 * GPU tests never skip silently.
 */
export async function testDevice(): Promise<{ adapter: GPUAdapter; device: GPUDevice }> {
  const adapter = await requestAdapter(dawnGpu(), DRIVER_HINT);
  const device = await adapter.requestDevice({
    requiredFeatures: wantedFeatures(adapter),
    requiredLimits: {
      maxStorageBufferBindingSize: adapter.limits.maxStorageBufferBindingSize,
      maxBufferSize: adapter.limits.maxBufferSize,
      maxComputeWorkgroupStorageSize: adapter.limits.maxComputeWorkgroupStorageSize,
      maxComputeInvocationsPerWorkgroup: adapter.limits.maxComputeInvocationsPerWorkgroup,
      maxStorageBuffersPerShaderStage: adapter.limits.maxStorageBuffersPerShaderStage,
    },
  });
  return { adapter, device };
}
