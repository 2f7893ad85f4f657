import { describe, expect, it } from 'vitest';
import { decodeSafetensors, encodeSafetensors } from '../../gpu/checkpoint/safetensors.js';
import { safetensorsToStageState, stageStateToSafetensors } from '../../gpu/checkpoint/stage-checkpoint.js';
import { splitBlocks, type GptConfig, type StageRange } from '../../gpu/model/config.js';
import { CpuStage } from '../../gpu/reference/cpu-stage.js';

const config: GptConfig = { vocabSize: 32, contextLength: 8, width: 16, heads: 2, layers: 4, mlpRatio: 4 };
const [first, last] = splitBlocks(config, 2) as [StageRange, StageRange];

async function checkpoint(): Promise<Uint8Array> {
  const stage = new CpuStage(config, last, { batch: 1, seq: 8 }, 3);
  const state = await stage.exportState();
  return stageStateToSafetensors({ ...state, step: 41 }, { config, range: last, extra: { run: 'abc' } });
}

/** The checkpoint with its metadata or tensor list edited, re-encoded as a valid safetensors file. */
function edited(
  bytes: Uint8Array,
  edit: (f: ReturnType<typeof decodeSafetensors>) => ReturnType<typeof decodeSafetensors>,
): Uint8Array {
  const f = edit(decodeSafetensors(bytes));
  return encodeSafetensors(f.tensors, f.metadata);
}

describe('stage checkpoints', () => {
  it('names tensors param/, adam_m/, adam_v/ and records step, config and range', async () => {
    const { tensors, metadata } = decodeSafetensors(await checkpoint());
    expect(tensors.map((t) => t.name)).toContain('param/blocks.2.attn.qkv.w');
    expect(tensors.map((t) => t.name)).toContain('adam_m/head.w');
    expect(tensors.map((t) => t.name)).toContain('adam_v/lnf.b');
    expect(metadata.step).toBe('41');
    expect(JSON.parse(metadata.config!)).toEqual(config);
    expect(JSON.parse(metadata.range!)).toEqual(last);
    expect(metadata.run).toBe('abc');
    const { state } = safetensorsToStageState(await checkpoint(), { config, range: last });
    expect(state.step).toBe(41);
  });

  it('rejects a checkpoint of another model or another stage', async () => {
    const bytes = await checkpoint();
    expect(() => safetensorsToStageState(bytes, { config: { ...config, width: 32 }, range: last })).toThrow(
      /config/,
    );
    expect(() => safetensorsToStageState(bytes, { config, range: first })).toThrow(/range/);
  });

  it('rejects missing or extra tensors, wrong shapes and bad metadata', async () => {
    const bytes = await checkpoint();
    const load = (b: Uint8Array): unknown => safetensorsToStageState(b, { config, range: last });
    expect(() => load(edited(bytes, (f) => ({ ...f, tensors: f.tensors.slice(1) })))).toThrow(/missing/);
    const extra = { name: 'param/zzz', shape: [1], data: new Float32Array(1) };
    expect(() => load(edited(bytes, (f) => ({ ...f, tensors: [...f.tensors, extra] })))).toThrow(
      /unexpected/,
    );
    const reshaped = (f: ReturnType<typeof decodeSafetensors>): ReturnType<typeof decodeSafetensors> => ({
      ...f,
      tensors: f.tensors.map((t) => (t.name === 'adam_v/head.w' ? { ...t, shape: [t.data.length] } : t)),
    });
    expect(() => load(edited(bytes, reshaped))).toThrow(/shape/);
    for (const [key, value, message] of [
      ['format', 'other/1', /format/],
      ['step', '-1', /step/],
      ['step', '1.5', /step/],
      ['config', '{', /JSON/],
    ] as const) {
      const bad = edited(bytes, (f) => ({ ...f, metadata: { ...f.metadata, [key]: value } }));
      expect(() => load(bad)).toThrow(message);
    }
  });

  it('refuses to write a state that does not fit the stage, or reserved extra keys', async () => {
    const state = await new CpuStage(config, first, { batch: 1, seq: 8 }, 3).exportState();
    expect(() => stageStateToSafetensors(state, { config, range: last })).toThrow(/tensors|expected/);
    expect(() => stageStateToSafetensors(state, { config, range: first, extra: { step: '3' } })).toThrow(
      /reserved/,
    );
  });
});
