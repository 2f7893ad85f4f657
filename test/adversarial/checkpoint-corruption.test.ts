import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { CheckpointRejected, loadCheckpoint, saveCheckpoint } from '../../coordinator/checkpoints.js';
import { runShape } from '../../coordinator/run-config.js';
import { seedState } from '../../gpu/model/flat-state.js';
import { tempDir, tinyConfig } from '../network/helpers.js';

const { dir, cleanup } = tempDir('tributary-ckpt-');
afterAll(cleanup);

describe('checkpoints are checked before they are written and before they are loaded', () => {
  const config = tinyConfig({ stages: 2 });
  const run = runShape(config);
  const states = () => run.ranges.map((r) => seedState(run.model, r, config.seed));

  it('refuses to write a state holding NaN or Inf, and writes nothing', () => {
    const poisoned = states();
    poisoned[1]!.v[3] = NaN;
    expect(() => saveCheckpoint(join(dir, 'a'), 1, run, config.runId, poisoned)).toThrow(
      /stage 2's state holds second moments holding NaN/,
    );
  });

  it('loads an intact checkpoint and refuses one whose file changed on disk (hash)', () => {
    const saved = saveCheckpoint(join(dir, 'b'), 1, run, config.runId, states());
    expect(loadCheckpoint(saved, run)[0]!.params).toEqual(states()[0]!.params);
    const file = join(saved, 'stage-1.safetensors');
    const bytes = readFileSync(file);
    bytes.writeUInt8(bytes.readUInt8(bytes.length - 5) ^ 0xff, bytes.length - 5);
    writeFileSync(file, bytes);
    expect(() => loadCheckpoint(saved, run)).toThrow(CheckpointRejected);
    expect(() => loadCheckpoint(saved, run)).toThrow(/stage 2's file does not match the hash/);
  });
});
