import { requestAdapter, summarizeAdapter, type AdapterSummary } from '../../gpu/device/acquire.js';
import { DRIVER_HINT, dawnGpu } from '../gpu-host/dawn.js';
import type { EngineKind } from '../../shared/protocol/messages.js';

/** The adapter in words a person can act on: "llvmpipe (CPU emulation)" is not a GPU. */
export function adapterLabel(summary: AdapterSummary): string {
  const name =
    summary.description.split(':')[0]!.trim() || summary.device || summary.vendor || 'unknown adapter';
  return summary.isFallback ? `${name} (CPU emulation)` : name;
}

/**
 * What the engine will run on, asked once up front: a machine without a WebGPU adapter fails here, with what
 * to install, instead of in the first node's engine thread.
 */
export async function engineLabel(engine: EngineKind): Promise<string> {
  if (engine === 'cpu') return 'the CPU reference engine';
  return adapterLabel(summarizeAdapter(await requestAdapter(dawnGpu(), DRIVER_HINT)));
}
