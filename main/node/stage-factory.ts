import { SubspaceDeviceCodec, SubspaceGpuStage } from '../../gpu/codec/device-boundary.js';
import { openCompression, type CompressionSettings } from '../../gpu/codec/run-compression.js';
import {
  ProjectedStage,
  gpuSubspaceOptions,
  type SubspaceConstraint,
} from '../../gpu/codec/subspace-stage.js';
import { acquireDevice } from '../../gpu/device/acquire.js';
import { matmulOptions, modelProducts, tuneMatmul, tuningLogLine } from '../../gpu/engine/autotune.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { GptConfig, MicroBatchShape, Precision, StageRange } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import type { EngineKind } from '../../shared/protocol/messages.js';
import { DRIVER_HINT, dawnGpu } from '../gpu-host/dawn.js';
import { fileTuningStore } from '../gpu-host/tuning-store.js';

export interface StageSpec {
  config: GptConfig;
  range: StageRange;
  shape: MicroBatchShape;
  seed: number;
  /** Refuse to allocate more than this many bytes of GPU memory (the user's VRAM cap). */
  maxBytes?: number;
  /** The run's boundary codec; the subspace codec keeps the stage's weights in span(U). */
  compression?: CompressionSettings;
  /** 'mixed': f16 operands with f32 accumulation on the GPU engine (the CPU reference computes in f32). */
  precision?: Precision;
}

function subspaceConstraint(s: StageSpec): SubspaceConstraint | null {
  return s.compression ? openCompression(s.compression, s.config, s.seed, s.range.count).constraint : null;
}

/** Builds stages on one engine; the GPU engine holds one dawn.node device for all of them. */
export interface StageEngine {
  create(spec: StageSpec): Promise<StageTrainer>;
  close(): void;
}

export interface EngineHostOptions {
  /** The matmul tuning cache (gpu-tuning.json in the node's data directory); without it, tuning is not kept. */
  tuningCachePath?: string;
  log?: (line: string) => void;
}

export async function openEngine(engine: EngineKind, host: EngineHostOptions = {}): Promise<StageEngine> {
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
  const log = host.log ?? (() => {});
  const kernelSets = new Map<Precision, KernelSet>();
  return {
    async create(s) {
      // Tuned once per device and precision, on the first stage's product shapes; later stages share them.
      const precision = s.precision ?? 'fp32';
      let kernels = kernelSets.get(precision);
      if (!kernels) {
        const store = host.tuningCachePath ? fileTuningStore(host.tuningCachePath) : undefined;
        const products = modelProducts(s.config, s.shape);
        const tuned = await tuneMatmul(device, { products, store, log, precision });
        log(tuningLogLine(tuned));
        kernels = new KernelSet(device, { precision, matmul: matmulOptions(tuned.tuning) });
        kernelSets.set(precision, kernels);
      }
      const constraint = subspaceConstraint(s);
      // The subspace codec encodes and decodes on the device: only k floats a token cross the PCIe bus.
      const codec = constraint ? new SubspaceDeviceCodec(device, constraint.basis, s.shape) : null;
      const stage = await GpuStage.create(device, s.config, s.range, s.shape, {
        seed: s.seed,
        maxBytes: s.maxBytes,
        kernels,
        ...(constraint ? gpuSubspaceOptions(device, s.config, s.range, constraint) : {}),
        ...(codec ? { boundary: (buffers) => codec.ops(buffers) } : {}),
      });
      return codec ? new SubspaceGpuStage(stage, codec) : stage;
    },
    close: () => device.destroy(),
  };
}
