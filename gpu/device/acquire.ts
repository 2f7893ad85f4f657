/** What the engine learnt about the adapter it runs on; printed by smoke tests and benchmarks. */
export interface AdapterSummary {
  vendor: string;
  architecture: string;
  device: string;
  description: string;
  features: string[];
  /** True for software adapters (lavapipe, SwiftShader), whose speed says nothing about a real GPU. */
  isFallback: boolean;
}

export class NoAdapterError extends Error {
  constructor(hint: string) {
    super(`No WebGPU adapter is available. ${hint}`);
    this.name = 'NoAdapterError';
  }
}

export function summarizeAdapter(adapter: GPUAdapter): AdapterSummary {
  return summarizeInfo(adapter.info, adapter.features);
}

function summarizeInfo(info: GPUAdapterInfo, features: GPUSupportedFeatures): AdapterSummary {
  const description = info.description ?? '';
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description,
    features: [...features].sort(),
    isFallback: /llvmpipe|lavapipe|swiftshader/i.test(
      `${description} ${info.device ?? ''} ${info.architecture ?? ''}`,
    ),
  };
}

export function adapterName(summary: AdapterSummary): string {
  const parts = [summary.vendor, summary.architecture, summary.device, summary.description].filter((s) => s);
  return parts.length > 0 ? [...new Set(parts)].join(' / ') : 'unknown adapter';
}

/** The adapter a device runs on, named as `adapterName` does (vendor, architecture, device, driver). */
export function deviceName(device: GPUDevice): string {
  return adapterName(summarizeInfo(device.adapterInfo, device.features));
}

/** Asks the injected GPU for a high-performance adapter; the hint says what to install when none exists. */
export async function requestAdapter(gpu: GPU, hint: string): Promise<GPUAdapter> {
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new NoAdapterError(hint);
  return adapter;
}

/** Limits a workload needs beyond WebGPU's defaults, in bytes. */
export interface DeviceNeeds {
  /** The largest single tensor binding. */
  maxStorageBufferBindingSize: number;
  /** The largest buffer. */
  maxBufferSize: number;
}

/** The limits the engine asks for: everything the adapter offers on the axes that bound model size. */
const requestedLimits = [
  'maxStorageBufferBindingSize',
  'maxBufferSize',
  'maxComputeWorkgroupStorageSize',
  'maxComputeInvocationsPerWorkgroup',
  'maxComputeWorkgroupSizeX',
  'maxStorageBuffersPerShaderStage',
] as const;

/**
 * Optional features the engine uses when present: `subgroups` feeds the lanes matmul on CPU adapters,
 * `shader-f16` the f16 operands of mixed precision, `chromium-experimental-subgroup-matrix` the tensor-core
 * matmul the autotuner may pick for them, and `timestamp-query` lets scripts/bench/step-profile.ts time each
 * kernel on the GPU itself.
 */
const optionalFeatures = [
  'subgroups',
  'shader-f16',
  'chromium-experimental-subgroup-matrix',
  'timestamp-query',
] as const;

export function wantedFeatures(adapter: GPUAdapter): GPUFeatureName[] {
  return optionalFeatures.filter((f) => adapter.features.has(f)) as GPUFeatureName[];
}

export interface AcquiredDevice {
  adapter: GPUAdapter;
  device: GPUDevice;
  summary: AdapterSummary;
  /** The device's granted limits, by name. */
  limits: Record<string, number>;
  /** Features enabled on the device. */
  features: string[];
}

/**
 * A device from the injected GPU (dawn.node's in Node, navigator.gpu in a page) with the limits `needs`
 * asks for. A need the adapter cannot meet fails here, with the numbers, before any model is built.
 */
export async function acquireDevice(gpu: GPU, hint: string, needs?: DeviceNeeds): Promise<AcquiredDevice> {
  const adapter = await requestAdapter(gpu, hint);
  for (const key of ['maxStorageBufferBindingSize', 'maxBufferSize'] as const) {
    const need = needs?.[key] ?? 0;
    if (need > adapter.limits[key]) {
      throw new Error(
        `this model needs ${key} >= ${need} bytes; the adapter offers ${adapter.limits[key]} (${adapterName(summarizeAdapter(adapter))})`,
      );
    }
  }
  const requiredLimits: Record<string, number> = {};
  for (const key of requestedLimits) requiredLimits[key] = adapter.limits[key];
  const device = await adapter.requestDevice({
    label: 'tributary engine',
    requiredLimits,
    requiredFeatures: wantedFeatures(adapter),
  });
  const limits: Record<string, number> = {};
  for (const key in device.limits) {
    const value = device.limits[key as keyof GPUSupportedLimits];
    if (typeof value === 'number') limits[key] = value;
  }
  return {
    adapter,
    device,
    summary: summarizeAdapter(adapter),
    limits,
    features: [...device.features].sort(),
  };
}
