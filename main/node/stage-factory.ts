import { acquireDevice } from '../../gpu/device/acquire.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import type { EngineKind } from '../../shared/protocol/messages.js';
import { DRIVER_HINT, dawnGpu } from '../gpu-host/dawn.js';

export interface StageSpec {
  config: GptConfig;
  range: StageRange;
  shape: MicroBatchShape;
  seed: number;
  /** Refuse to allocate more than this many bytes of GPU memory (the user's VRAM cap). */
  maxBytes?: number;
}

/** Builds stages on one engine; the GPU engine holds one dawn.node device for all of them. */
export interface StageEngine {
  create(spec: StageSpec): Promise<StageTrainer>;
  close(): void;
}

export async function openEngine(engine: EngineKind): Promise<StageEngine> {
  if (engine === 'cpu') {
    return { create: async (s) => new CpuStage(s.config, s.range, s.shape, s.seed), close: () => {} };
  }
  const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
  return {
    create: (s) =>
      GpuStage.create(device, s.config, s.range, s.shape, { seed: s.seed, maxBytes: s.maxBytes }),
    close: () => device.destroy(),
  };
}
