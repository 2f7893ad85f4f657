import { acquireDevice, adapterName } from '../../../gpu/device/acquire.js';
import { GpuStage } from '../../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../../gpu/engine/kernel-set.js';
import { stageDeviceNeeds } from '../../../gpu/engine/stage-layout.js';
import { wholeModel, type GptConfig, type MicroBatchShape } from '../../../gpu/model/config.js';
import { Trainer, type MicroBatch } from '../../../gpu/train/trainer.js';

/** A fixed small training run, identical wherever it runs: dawn.node in Node, navigator.gpu in Chromium. */
export const fixedRun = {
  config: {
    vocabSize: 64,
    contextLength: 16,
    width: 32,
    heads: 4,
    layers: 2,
    mlpRatio: 4,
  } satisfies GptConfig,
  shape: { batch: 2, seq: 16 } satisfies MicroBatchShape,
  stages: 2,
  steps: 5,
  seed: 3,
};

export interface FixedRunResult {
  adapter: string;
  isFallback: boolean;
  /** Subgroup size of the lanes kernels the run used, or null when it used the workgroup-memory ones. */
  lanes: number | null;
  losses: number[];
}

/**
 * Token ids from a small LCG, so Node and the page build the same batches without sharing files. Two batches
 * alternate, so the model can memorise them and the loss visibly falls.
 */
function batch(step: number): MicroBatch {
  const n = fixedRun.shape.batch * fixedRun.shape.seq;
  let s = (step * 7919 + 17) >>> 0;
  const ids = new Int32Array(n + 1);
  for (let i = 0; i <= n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    ids[i] = s >>> 26;
  }
  return { tokens: ids.subarray(0, n), targets: ids.subarray(1, n + 1) };
}

export async function runFixedTraining(gpu: GPU, hint: string): Promise<FixedRunResult> {
  const { config, shape, stages, steps, seed } = fixedRun;
  const acquired = await acquireDevice(gpu, hint, stageDeviceNeeds(config, wholeModel(config), shape));
  const { device } = acquired;
  try {
    const kernels = new KernelSet(device);
    const trainer = await Trainer.create({
      config,
      stageCount: stages,
      shape,
      microBatches: 1,
      adamw: { learningRate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
      gradClip: 1,
      makeStage: (range) => GpuStage.create(device, config, range, shape, { seed, kernels }),
    });
    const losses: number[] = [];
    for (let i = 0; i < steps; i++) losses.push((await trainer.step([batch(i % 2)])).loss);
    trainer.destroy();
    return {
      adapter: adapterName(acquired.summary),
      isFallback: acquired.summary.isFallback,
      lanes: kernels.matmul.lanes,
      losses,
    };
  } finally {
    device.destroy();
  }
}
