import { describe, expect, it } from 'vitest';
import { acquireDevice, adapterName } from '../../gpu/device/acquire.js';
import { stageDeviceNeeds } from '../../gpu/engine/stage-layout.js';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { WindowSampler, byteCorpus } from '../../gpu/train/data.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';

const config: GptConfig = { vocabSize: 256, contextLength: 64, width: 64, heads: 4, layers: 2, mlpRatio: 4 };

describe('acquireDevice', () => {
  it('grants the limits a model needs and reports adapter, limits and features', async () => {
    const needs = stageDeviceNeeds(config, wholeModel(config), { batch: 8, seq: 64 });
    // The largest tensor of this stage is the logits/probabilities, 8*64 tokens x 256 f32.
    expect(needs.maxStorageBufferBindingSize).toBe(8 * 64 * 256 * 4);
    const got = await acquireDevice(dawnGpu(), DRIVER_HINT, needs);
    try {
      console.log(
        `adapter: ${adapterName(got.summary)}; maxStorageBufferBindingSize ${got.limits.maxStorageBufferBindingSize}`,
      );
      expect(got.limits.maxStorageBufferBindingSize).toBeGreaterThanOrEqual(
        needs.maxStorageBufferBindingSize,
      );
      expect(got.limits.maxBufferSize).toBeGreaterThanOrEqual(needs.maxBufferSize);
      expect(Object.keys(got.limits).length).toBeGreaterThan(10);
      expect(Array.isArray(got.features)).toBe(true);
    } finally {
      got.device.destroy();
    }
  });

  it('refuses, with the numbers, a need the adapter cannot meet', async () => {
    const huge = 2 ** 50;
    await expect(
      acquireDevice(dawnGpu(), DRIVER_HINT, { maxStorageBufferBindingSize: huge, maxBufferSize: huge }),
    ).rejects.toThrow(
      new RegExp(`needs maxStorageBufferBindingSize >= ${huge} bytes; the adapter offers \\d+`),
    );
  });
});

describe('byte corpus windows', () => {
  const text = 'To be, or not to be, that is the question: Whether \u2019tis nobler in the mind to suffer';
  const { train, heldOut } = byteCorpus(text, 0.25);

  it('holds out the tail and encodes bytes', () => {
    const bytes = new TextEncoder().encode(text);
    expect(train.length + heldOut.length).toBe(bytes.length);
    expect([...train.subarray(0, 5)]).toEqual([...bytes.subarray(0, 5)]);
  });

  it('draws the same windows for the same seed, with targets shifted by one', () => {
    const shape = { batch: 3, seq: 8 };
    const a = new WindowSampler(train, shape, 5).take(4);
    const b = new WindowSampler(train, shape, 5).take(4);
    const c = new WindowSampler(train, shape, 6).take(4);
    expect(a).toEqual(b);
    expect(a).not.toEqual(c);
    for (const mb of a) {
      for (let row = 0; row < shape.batch; row++) {
        const t = mb.tokens.subarray(row * 8, row * 8 + 8);
        const y = mb.targets.subarray(row * 8, row * 8 + 8);
        expect([...t.subarray(1)]).toEqual([...y.subarray(0, 7)]);
      }
    }
  });

  it('refuses a corpus shorter than one window', () => {
    expect(() => new WindowSampler(new Int32Array(8), { batch: 1, seq: 8 }, 1)).toThrow(/needs 9/);
  });
});
