import { afterAll, describe, expect, test } from 'vitest';
import { buildSubspaceBasis, constrainedBlock } from '../../gpu/codec/basis.js';
import { SubspaceDeviceCodec, SubspaceGpuStage } from '../../gpu/codec/device-boundary.js';
import { gpuSubspaceOptions, type SubspaceConstraint } from '../../gpu/codec/subspace-stage.js';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { splitBlocks, type GptConfig, type MicroBatchShape } from '../../gpu/model/config.js';
import { WorkerStage } from '../../main/node/engine-host.js';
import { createSubspaceCodec, subspaceParts } from '../../shared/protocol/codec-subspace.js';
import { fileDevice, maxAbsDiff, randomTokens } from '../gpu/harness.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';

const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const boundary = { ...shape, width: config.width };
const BT = shape.batch * shape.seq;
const SEED = 11;
const RANK = 4;
const basis = buildSubspaceBasis(config, SEED, RANK);
const codec = createSubspaceCodec(basis);
const ranges = splitBlocks(config, 2);
const constraint: SubspaceConstraint = { basis, constrained: constrainedBlock(config, 2, 'beforeLastStage') };
const dev = fileDevice();
const { dir, cleanup } = tempDir();
afterAll(cleanup);

/** Relative to the largest magnitude: the device sums in f32 where the CPU codec sums in f64. */
const TOLERANCE = 1e-5;
function relDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  return maxAbsDiff(a, b) / Math.max(...Array.from(b, Math.abs));
}

function gpuStages(): Promise<SubspaceGpuStage[]> {
  return Promise.all(
    ranges.map(async (range) => {
      const deviceCodec = new SubspaceDeviceCodec(dev.device, basis, shape);
      const stage = await GpuStage.create(dev.device, config, range, shape, {
        seed: SEED,
        kernels: dev.kernels,
        ...gpuSubspaceOptions(dev.device, config, range, constraint),
        boundary: (buffers) => deviceCodec.ops(buffers),
      });
      return new SubspaceGpuStage(stage, deviceCodec);
    }),
  );
}

describe('the subspace codec on a GPU stage, against the CPU codec', () => {
  test(`encodings and decodings agree within ${TOLERANCE} of the largest value`, async () => {
    const [s0, s1] = await gpuStages();
    const tokens = randomTokens(BT, config.vocabSize, 3);
    const targets = randomTokens(BT, config.vocabSize, 4);

    // Forward out of stage 0: encoded on the device, and the same activations read back and encoded on the CPU.
    const onDevice = await s0!.forwardEncoded({ kind: 'tokens', tokens });
    const floats = await s0!.forward({ kind: 'tokens', tokens });
    if (onDevice.kind !== 'payload' || floats.kind !== 'activations') throw new Error('stage 0 gave a loss');
    const onHost = codec.encode(floats.data, boundary, 'forward', tokens);
    expect(onDevice.payload.byteLength).toBe(onHost.byteLength);
    const device = subspaceParts(onDevice.payload, BT, RANK, 'forward');
    const host = subspaceParts(onHost, BT, RANK, 'forward');
    expect(relDiff(device.coeffs, host.coeffs)).toBeLessThan(TOLERANCE);
    expect(device.ids).toEqual(host.ids);

    // Into stage 1: the payload decoded on the device gives the loss of the CPU's decoding.
    const lossDevice = await s1!.forwardEncoded({ kind: 'payload', payload: onDevice.payload }, targets);
    const gradDevice = await s1!.backwardEncoded(null, 1);
    const lossHost = await s1!.forward(
      { kind: 'activations', data: codec.decode(onDevice.payload, boundary, 'forward').data },
      targets,
    );
    const gradHost = await s1!.backward(null, 1);
    if (lossDevice.kind !== 'loss' || lossHost.kind !== 'loss') throw new Error('stage 1 gave no loss');
    expect(Math.abs(lossDevice.loss - lossHost.loss)).toBeLessThan(TOLERANCE * lossHost.loss);

    // Backward out of stage 1: the input gradient encoded on the device and on the CPU.
    const gradOnHost = codec.encode(gradHost!, boundary, 'backward');
    expect(gradDevice!.byteLength).toBe(gradOnHost.byteLength);
    expect(relDiff(new Float32Array(gradDevice!.buffer), new Float32Array(gradOnHost.buffer))).toBeLessThan(
      TOLERANCE,
    );

    // Into stage 0: the gradient decoded on the device accumulates the weight gradients of the CPU's decoding.
    const weightGrads = async (backward: () => Promise<unknown>): Promise<Float32Array> => {
      s0!.zeroGrad();
      await s0!.forward({ kind: 'tokens', tokens });
      await backward();
      return s0!.exportGrads();
    };
    const viaDevice = await weightGrads(() => s0!.backwardEncoded(gradDevice, 1));
    const viaHost = await weightGrads(() =>
      s0!.backward(codec.decode(gradDevice!, boundary, 'backward').data, 1),
    );
    expect(relDiff(viaDevice, viaHost)).toBeLessThan(TOLERANCE);
    for (const s of [s0, s1]) s!.destroy();
  });
});

test(
  'a 2-stage subspace run on the GPU engine encodes on the device and trains as the CPU engine does',
  { timeout: 600_000 },
  async () => {
    const run = async (engine: 'gpu' | 'cpu'): Promise<{ losses: number[]; codecs: unknown[] }> => {
      const cfg = tinyConfig({
        runId: `device-codec-${engine}`,
        steps: 6,
        compression: { codec: 'subspace', rank: 2 },
      });
      const coordinator = await startCoordinator(cfg, `${dir}/${engine}`);
      const codecs: unknown[] = [];
      const nodes = [0, 1].map(() =>
        startNode(coordinator.url, engine, {
          createStage: async (kind, spec) => {
            const stage = await WorkerStage.create(kind, spec);
            codecs.push(stage.boundaryCodec);
            return stage;
          },
        }),
      );
      try {
        await coordinator.finished;
        const c = coordinator.run.codec;
        const perMicroBatch =
          c.payloadBytes({ ...cfg.microBatch, width: 32 }, 'forward') +
          c.payloadBytes({ ...cfg.microBatch, width: 32 }, 'backward');
        expect(coordinator.status().relayedBytes).toBe(cfg.steps * cfg.microBatchesPerStep * perMicroBatch);
        return { losses: coordinator.store.losses().map((l) => l.loss), codecs };
      } finally {
        await Promise.all(nodes.map((n) => n.stop()));
        await coordinator.close();
      }
    };
    const gpu = await run('gpu');
    const cpu = await run('cpu');
    expect(gpu.codecs).toEqual(['subspace', 'subspace']);
    expect(cpu.codecs).toEqual([undefined, undefined]);
    expect(gpu.losses).toHaveLength(6);
    expect(gpu.losses.at(-1)!).toBeLessThan(gpu.losses[0]! - 0.1);
    gpu.losses.forEach((loss, i) => expect(Math.abs(loss - cpu.losses[i]!)).toBeLessThan(1e-2));
    console.log(
      `losses, GPU engine: ${gpu.losses.map((l) => l.toFixed(4)).join(' ')}; CPU: ${cpu.losses.map((l) => l.toFixed(4)).join(' ')}`,
    );
  },
);
