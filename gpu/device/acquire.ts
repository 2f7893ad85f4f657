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
  const info = adapter.info;
  const description = info.description ?? '';
  return {
    vendor: info.vendor ?? '',
    architecture: info.architecture ?? '',
    device: info.device ?? '',
    description,
    features: [...adapter.features].sort(),
    isFallback: /llvmpipe|lavapipe|swiftshader/i.test(`${description} ${info.device ?? ''} ${info.architecture ?? ''}`),
  };
}

export function adapterName(summary: AdapterSummary): string {
  const parts = [summary.vendor, summary.architecture, summary.device, summary.description].filter((s) => s);
  return parts.length > 0 ? [...new Set(parts)].join(' / ') : 'unknown adapter';
}

/** Asks the injected GPU for a high-performance adapter; the hint says what to install when none exists. */
export async function requestAdapter(gpu: GPU, hint: string): Promise<GPUAdapter> {
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) throw new NoAdapterError(hint);
  return adapter;
}
