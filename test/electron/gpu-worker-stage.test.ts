import { describe, expect, it } from 'vitest';
import { acquireDevice } from '../../gpu/device/acquire.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { KernelSet } from '../../gpu/engine/kernel-set.js';
import type { GptConfig, MicroBatchShape, StageRange } from '../../gpu/model/config.js';
import type { StageTrainer } from '../../gpu/stage/types.js';
import { Trainer, type MicroBatch } from '../../gpu/train/trainer.js';
import { GpuWorkerClient } from '../../main/electron/gpu-worker-client.js';
import { GpuWorkerStage } from '../../main/electron/gpu-worker-stage.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';
import { serveGpuPort } from '../../main/gpu-worker/loop.js';
import { asMainPort } from './main-port.js';

const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const adamw = { learningRate: 1e-2, beta1: 0.9, beta2: 0.95, eps: 1e-8, weightDecay: 0.1 };
const SEED = 11;
const STEPS = 4;

function batch(step: number): MicroBatch {
  const n = shape.batch * shape.seq;
  const ids = Int32Array.from({ length: n + 1 }, (_, i) => (i * 7 + step * 13) % config.vocabSize);
  return { tokens: ids.subarray(0, n), targets: ids.subarray(1) };
}

async function train(makeStage: (range: StageRange) => Promise<StageTrainer>): Promise<number[]> {
  const trainer = await Trainer.create({
    config,
    stageCount: 2,
    shape,
    microBatches: 1,
    adamw,
    gradClip: 1,
    makeStage,
  });
  const losses: number[] = [];
  for (let i = 0; i < STEPS; i++) losses.push((await trainer.step([batch(i % 2)])).loss);
  trainer.destroy();
  return losses;
}

describe('a pipeline stage trained through the GPU worker protocol', () => {
  it('gives exactly the losses of the same stages driven directly (dawn.node on both sides)', async () => {
    const { device } = await acquireDevice(dawnGpu(), DRIVER_HINT);
    const kernels = new KernelSet(device);
    const direct = await train((range) =>
      GpuStage.create(device, config, range, shape, { seed: SEED, kernels }),
    );
    device.destroy();

    // One worker (one page in the desktop app) per stage, each with its own device.
    const clients: GpuWorkerClient[] = [];
    const viaWorker = await train(async (range) => {
      const { port1, port2 } = new MessageChannel();
      const client = new GpuWorkerClient(asMainPort(port1));
      clients.push(client);
      serveGpuPort(port2, dawnGpu());
      await client.request({ type: 'acquire' });
      return GpuWorkerStage.create(client, { config, range, shape, seed: SEED });
    });
    for (const client of clients) client.close();

    console.log(
      `losses direct ${direct.map((l) => l.toFixed(6)).join(' ')}; via worker ${viaWorker.map((l) => l.toFixed(6)).join(' ')}`,
    );
    expect(viaWorker).toEqual(direct);
    expect(viaWorker.at(-1)!).toBeLessThan(viaWorker[0]!);
  });

  it('reports stage errors from the page as errors of the call', async () => {
    const { port1, port2 } = new MessageChannel();
    const client = new GpuWorkerClient(asMainPort(port1));
    serveGpuPort(port2, dawnGpu());
    const range: StageRange = { index: 0, count: 1, firstBlock: 0, endBlock: 2 };
    await expect(GpuWorkerStage.create(client, { config, range, shape, seed: 1 })).rejects.toThrow(
      /send "acquire" first/,
    );
    await client.request({ type: 'acquire' });
    await expect(
      GpuWorkerStage.create(client, { config: { ...config, width: 30 }, range, shape, seed: 1 }),
    ).rejects.toThrow(/width/);
    await expect(client.request({ type: 'stage-call', method: 'forward', args: [] })).rejects.toThrow(
      /no stage/,
    );
    await client.request({ type: 'release' });
    client.close();
  });
});
