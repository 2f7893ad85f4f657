import { describe, expect, it } from 'vitest';
import { safetensorsToStageState, stageStateToSafetensors } from '../../gpu/checkpoint/stage-checkpoint.js';
import type { DeviceLostError } from '../../gpu/device/lost.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';
import type { StageState, StageTrainer } from '../../gpu/stage/types.js';
import { Trainer, type MicroBatch, type TrainerOptions } from '../../gpu/train/trainer.js';
import { testDevice } from '../helpers/gpu.js';
import { fileDevice, randomTokens } from './harness.js';

const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 3, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const SEED = 11;
const base = {
  config,
  stageCount: 2,
  shape,
  microBatches: 2,
  adamw: { learningRate: 3e-3, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 },
  gradClip: 1,
};

const dev = fileDevice();

const gpuStage = (range: StageRange): Promise<GpuStage> =>
  GpuStage.create(dev.device, config, range, shape, { seed: SEED, kernels: dev.kernels });

function batches(step: number): MicroBatch[] {
  const BT = shape.batch * shape.seq;
  return [0, 1].map((i) => ({
    tokens: randomTokens(BT, 64, 1000 + 10 * step + i),
    targets: randomTokens(BT, 64, 2000 + 10 * step + i),
  }));
}

async function run<S extends StageTrainer>(trainer: Trainer<S>, from: number, to: number): Promise<number[]> {
  const losses: number[] = [];
  for (let s = from; s < to; s++) losses.push((await trainer.step(batches(s))).loss);
  return losses;
}

function flatParams(states: StageState[]): Float32Array {
  const parts = states.flatMap((s) => s.params.map((t) => t.data));
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const p of parts) {
    out.set(p, offset);
    offset += p.length;
  }
  return out;
}

describe('Trainer', () => {
  it('runs CpuStages and GpuStages through the same loop to the same losses', async () => {
    const gpu = await Trainer.create({ ...base, makeStage: gpuStage });
    const cpu = await Trainer.create({ ...base, makeStage: (r) => new CpuStage(config, r, shape, SEED) });
    try {
      const g = await run(gpu, 0, 3);
      const c = await run(cpu, 0, 3);
      // f32 on both sides with different summation orders: 1e-4 relative after three AdamW steps.
      g.forEach((loss, i) =>
        expect(Math.abs(loss - c[i]!) / c[i]!, `step ${i}: ${loss} vs ${c[i]}`).toBeLessThan(1e-4),
      );
    } finally {
      gpu.destroy();
      cpu.destroy();
    }
  });

  it('continues bit-identically from a safetensors checkpoint on the same device', async () => {
    const first = await Trainer.create({ ...base, makeStage: gpuStage });
    const resumed = await Trainer.create({ ...base, makeStage: gpuStage });
    try {
      await run(first, 0, 2);
      const files = (await first.exportState()).map((state, i) =>
        stageStateToSafetensors(state, { config, range: first.ranges[i]! }),
      );
      const straight = await run(first, 2, 4);
      await resumed.importState(
        files.map((bytes, i) => safetensorsToStageState(bytes, { config, range: resumed.ranges[i]! }).state),
      );
      const again = await run(resumed, 2, 4);
      expect(again).toEqual(straight);
      expect(flatParams(await resumed.exportState())).toEqual(flatParams(await first.exportState()));
    } finally {
      first.destroy();
      resumed.destroy();
    }
  });

  it('recovers from a lost device mid-run and continues from the last completed step, bit-identically', async () => {
    const reference = await Trainer.create({ ...base, makeStage: gpuStage });
    const want = await run(reference, 0, 4);
    const wantParams = flatParams(await reference.exportState());
    reference.destroy();

    // A device of its own, so destroying it leaves the shared one alone.
    let own = (await testDevice()).device;
    const lost: DeviceLostError[] = [];
    // Destroys the device right after the first stage's forward, in the middle of a step.
    let killDuringStep = false;
    const makeStage = async (range: StageRange): Promise<GpuStage> => {
      const stage = await GpuStage.create(own, config, range, shape, { seed: SEED });
      const forward = stage.forward.bind(stage);
      stage.forward = async (input, targets) => {
        const out = await forward(input, targets);
        if (killDuringStep && range.index === 0) {
          killDuringStep = false;
          own.destroy();
        }
        return out;
      };
      return stage;
    };
    const options: TrainerOptions<GpuStage> = {
      ...base,
      makeStage,
      onDeviceLost: async (error) => {
        lost.push(error);
        own = (await testDevice()).device;
      },
    };
    const trainer = await Trainer.create(options);
    try {
      const losses = await run(trainer, 0, 2);
      killDuringStep = true;
      const third = await trainer.step(batches(2));
      expect(third.recoveries).toBe(1);
      losses.push(third.loss, ...(await run(trainer, 3, 4)));
      expect(lost.map((e) => e.reason)).toEqual(['destroyed']);
      expect(losses).toEqual(want);
      expect(flatParams(await trainer.exportState())).toEqual(wantParams);
    } finally {
      trainer.destroy();
      own.destroy();
    }
  });
});
