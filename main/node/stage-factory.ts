import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import type { EngineKind } from '../../shared/protocol/messages.js';

export interface StageSpec {
  config: GptConfig;
  range: StageRange;
  shape: MicroBatchShape;
  seed: number;
}

/** Builds a stage on the chosen engine, in the calling thread. */
export async function createStage(engine: EngineKind, spec: StageSpec): Promise<StageTrainer> {
  if (engine === 'cpu') return new CpuStage(spec.config, spec.range, spec.shape, spec.seed);
  throw new Error('the GPU engine is not part of this build yet; run with --engine cpu');
}
