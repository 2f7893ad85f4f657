import type { SubspaceBasis } from '../../shared/protocol/codec-subspace.js';
import type { GpuStageOptions } from '../engine/gpu-stage.js';
import type { GptConfig, StageRange } from '../model/config.js';
import { stageParams } from '../model/params.js';
import type { StageState, StageTrainer } from '../stage/types.js';
import { projectParams, projectionTargets } from './projection.js';
import { SubspaceKernels } from './subspace-kernels.js';

export interface SubspaceConstraint {
  basis: SubspaceBasis;
  /** Whether block l's output projections are kept in span(U). */
  constrained: (block: number) => boolean;
}

/** GpuStage options that project the stage's constrained parameters into span(U) on the device. */
export function gpuSubspaceOptions(
  device: GPUDevice,
  config: GptConfig,
  range: StageRange,
  c: SubspaceConstraint,
): Pick<GpuStageOptions, 'constrainParams'> {
  const targets = projectionTargets(range, c.constrained);
  const shapes = new Map(stageParams(config, range).map((s) => [s.name, s.shape]));
  return {
    constrainParams: (param) => {
      const kernels = new SubspaceKernels(device, c.basis);
      return targets.map((t) => kernels.project(param(t.name), t, shapes.get(t.name)!));
    },
  };
}

/**
 * A stage kept in span(U) through its exported state: the CPU reference of the GPU path above. It projects
 * once when built ({@link ProjectedStage.create}), after every import and after every optimizer step.
 */
export class ProjectedStage implements StageTrainer {
  private readonly targets;

  private constructor(
    private readonly inner: StageTrainer,
    private readonly c: SubspaceConstraint,
  ) {
    this.targets = projectionTargets(inner.range, c.constrained);
  }

  static async create(inner: StageTrainer, c: SubspaceConstraint): Promise<ProjectedStage> {
    const stage = new ProjectedStage(inner, c);
    await stage.project();
    return stage;
  }

  get config(): GptConfig {
    return this.inner.config;
  }
  get range(): StageRange {
    return this.inner.range;
  }
  get shape(): StageTrainer['shape'] {
    return this.inner.shape;
  }
  get paramCount(): number {
    return this.inner.paramCount;
  }
  forward(...a: Parameters<StageTrainer['forward']>): ReturnType<StageTrainer['forward']> {
    return this.inner.forward(...a);
  }
  backward(...a: Parameters<StageTrainer['backward']>): ReturnType<StageTrainer['backward']> {
    return this.inner.backward(...a);
  }
  zeroGrad(): void {
    this.inner.zeroGrad();
  }
  gradSquaredNorm(): Promise<number> {
    return this.inner.gradSquaredNorm();
  }
  exportGrads(): Promise<Float32Array> {
    return this.inner.exportGrads();
  }
  importGrads(grads: Float32Array): Promise<void> {
    return this.inner.importGrads(grads);
  }
  async step(...a: Parameters<StageTrainer['step']>): Promise<void> {
    await this.inner.step(...a);
    await this.project();
  }
  exportState(): Promise<StageState> {
    return this.inner.exportState();
  }
  async importState(state: StageState): Promise<void> {
    await this.inner.importState(state);
    await this.project();
  }
  destroy(): void {
    this.inner.destroy();
  }

  private async project(): Promise<void> {
    const state = await this.inner.exportState();
    projectParams(state.params, this.targets, this.c.basis);
    await this.inner.importState(state);
  }
}
