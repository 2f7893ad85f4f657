import { openCompression, type CompressionSettings } from '../../gpu/codec/run-compression.js';
import {
  ProjectedStage,
  gpuSubspaceOptions,
  type SubspaceConstraint,
} from '../../gpu/codec/subspace-stage.js';
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
  /** The run's boundary codec; the subspace codec keeps the stage's weights in span(U). */
  compression?: CompressionSettings;
}

function subspaceConstraint(s: StageSpec): SubspaceConstraint | null {
  return s.compression ? openCompression(s.compression, s.config, s.seed, s.range.count).constraint : null;
}

/** Builds stages on one engine; the GPU engine holds one dawn.node device for all of them. */
export interface StageEngine {
  create(spec: StageSpec): Promise<StageTrainer>;
  close(): void;
}

export async function openEngine(engine: EngineKind): Promise<StageEngine> {
  if (engine === 'cpu') {
    return {
      create: async (s) => {
        const stage = new CpuStage(s.config, s.range, s.shape, s.seed);
        const constraint = subspaceConstraint(s);
        return constraint ? ProjectedStage.create(stage, constraint) : stage;
      },
      close: () => {},
    };
  }
  const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
  return {
    create: (s) => {
      const constraint = subspaceConstraint(s);
      return GpuStage.create(device, s.config, s.range, s.shape, {
        seed: s.seed,
        maxBytes: s.maxBytes,
        ...(constraint ? gpuSubspaceOptions(device, s.config, s.range, constraint) : {}),
      });
    },
    close: () => device.destroy(),
  };
}
