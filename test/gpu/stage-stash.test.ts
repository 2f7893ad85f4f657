import { describe, expect, it } from 'vitest';
import { GpuStage } from '../../gpu/engine/gpu-stage.js';
import { estimateStageMemoryBytes } from '../../gpu/engine/stage-layout.js';
import { splitBlocks, type GptConfig, type MicroBatchShape } from '../../gpu/model/config.js';
import { fileDevice, randomTokens } from './harness.js';

const config: GptConfig = { vocabSize: 64, contextLength: 16, width: 32, heads: 4, layers: 2, mlpRatio: 4 };
const shape: MicroBatchShape = { batch: 2, seq: 16 };
const SEED = 7;
const BT = shape.batch * shape.seq;
const dev = fileDevice();

const batches = [0, 1].map((i) => ({
  tokens: randomTokens(BT, config.vocabSize, 100 + i),
  targets: randomTokens(BT, config.vocabSize, 200 + i),
}));

async function stages(): Promise<GpuStage[]> {
  return Promise.all(
    splitBlocks(config, 2).map((r) =>
      GpuStage.create(dev.device, config, r, shape, { seed: SEED, kernels: dev.kernels }),
    ),
  );
}

describe('GpuStage activation stashes (1F1B)', () => {
  it('two forwards before their backwards, via stash and restore, give the same gradients bit for bit', async () => {
    // Reference: each micro-batch forward then backward through both stages.
    const plain = await stages();
    for (const mb of batches) {
      const out = await plain[0]!.forward({ kind: 'tokens', tokens: mb.tokens });
      if (out.kind !== 'activations') throw new Error('expected activations');
      await plain[1]!.forward({ kind: 'activations', data: out.data }, mb.targets);
      const grad = await plain[1]!.backward(null, 0.5);
      await plain[0]!.backward(grad, 0.5);
    }
    // 1F1B on stage 0: F0 F1 (stashed), then B0 B1 after the last stage's work.
    const piped = await stages();
    const gradsOut: Float32Array[] = [];
    for (const [i, mb] of batches.entries()) {
      const out = await piped[0]!.forward({ kind: 'tokens', tokens: mb.tokens });
      if (out.kind !== 'activations') throw new Error('expected activations');
      await piped[0]!.stash(10 + i);
      await piped[1]!.forward({ kind: 'activations', data: out.data }, mb.targets);
      gradsOut.push((await piped[1]!.backward(null, 0.5))!);
    }
    for (const [i] of batches.entries()) {
      await piped[0]!.restore(10 + i);
      await piped[0]!.backward(gradsOut[i]!, 0.5);
    }
    for (const s of [0, 1]) {
      const want = await plain[s]!.exportGrads();
      const got = await piped[s]!.exportGrads();
      expect(Buffer.from(got.buffer).equals(Buffer.from(want.buffer)), `stage ${s}`).toBe(true);
    }
    await expect(piped[0]!.restore(10)).rejects.toThrow(/no activations stashed under 10/);
    for (const s of [...plain, ...piped]) s.destroy();
  });

  it('the VRAM cap sets how many micro-batches a stage can stash', async () => {
    const range = splitBlocks(config, 2)[0]!;
    const probe = await GpuStage.create(dev.device, config, range, shape, {
      seed: SEED,
      kernels: dev.kernels,
    });
    expect(probe.stashCapacity).toBeGreaterThan(8);
    probe.destroy();
    const needed = estimateStageMemoryBytes(config, range, shape, undefined, dev.kernels.attentionKind);
    const one = await GpuStage.create(dev.device, config, range, shape, {
      seed: SEED,
      kernels: dev.kernels,
      maxBytes: needed + 1,
    });
    expect(one.stashCapacity).toBe(1);
    one.destroy();
    // Find one stash's bytes from a capacity, then give room for exactly two.
    const roomy = await GpuStage.create(dev.device, config, range, shape, {
      seed: SEED,
      kernels: dev.kernels,
      maxBytes: needed + 10 * 2 ** 20,
    });
    const stashBytes = Math.floor((10 * 2 ** 20) / roomy.stashCapacity);
    roomy.destroy();
    const two = await GpuStage.create(dev.device, config, range, shape, {
      seed: SEED,
      kernels: dev.kernels,
      maxBytes: needed + 2 * stashBytes + stashBytes / 2,
    });
    expect(two.stashCapacity).toBe(2);
    for (const i of [0, 1]) {
      await two.forward({ kind: 'tokens', tokens: batches[0]!.tokens });
      await two.stash(i);
    }
    await two.forward({ kind: 'tokens', tokens: batches[0]!.tokens });
    await expect(two.stash(2)).rejects.toThrow(/already holding 2 of 2/);
    two.destroy();
  });
});
