import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { WorkerStage } from '../../main/node/engine-host.js';

/**
 * The node's engine thread tunes the matmul on first use of its adapter, keeps the choice in the cache file
 * the host names (gpu-tuning.json in the data directory), says what it chose through the host's log, and
 * reads the file back the next time.
 */
const config: GptConfig = { vocabSize: 32, contextLength: 8, width: 16, heads: 2, layers: 1, mlpRatio: 4 };
const spec = { config, range: wholeModel(config), shape: { batch: 2, seq: 8 }, seed: 3 };

describe('the node engine thread and the tuning cache', () => {
  let dir = '';
  afterAll(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));

  it('measures once, logs the choice, writes the cache, and reuses it in a new engine thread', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tributary-engine-'));
    const tuningCachePath = join(dir, 'gpu-tuning.json');
    const runOnce = async (): Promise<string[]> => {
      const lines: string[] = [];
      const stage = await WorkerStage.create('gpu', spec, { tuningCachePath, log: (l) => lines.push(l) });
      stage.destroy();
      return lines;
    };
    const first = await runOnce();
    const cached = JSON.parse(await readFile(tuningCachePath, 'utf8')) as Record<string, { version: number }>;
    const [adapter] = Object.keys(cached);
    expect(Object.values(cached)).toHaveLength(1);
    // One line naming the adapter, each product's kernel, and whether it was measured or read from the cache
    // (the node logs it at info level).
    const kernels = /forward \S+ [\d.]+ GFLOP\/s, backwardInput \S+ [\d.]+ GFLOP\/s, backwardWeight \S+/;
    expect(
      first.find((l) => /^matmul kernels \(measured in [0-9.]+ s\): /.test(l) && l.includes(`${adapter}: `)),
    ).toMatch(kernels);
    const second = await runOnce();
    expect(second.find((l) => l.startsWith(`matmul kernels (cache): ${adapter}: `))).toMatch(kernels);
  }, 120_000);
});
