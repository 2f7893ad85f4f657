import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { wholeModel, type GptConfig } from '../../gpu/model/config.js';
import { GpuWorkerClient } from '../../main/electron/gpu-worker-client.js';
import { GpuWorkerStage } from '../../main/electron/gpu-worker-stage.js';
import { dawnGpu } from '../../main/gpu-host/dawn.js';
import { fileTuningStore } from '../../main/gpu-host/tuning-store.js';
import { serveGpuPort } from '../../main/gpu-worker/loop.js';
import { asMainPort } from '../electron/main-port.js';

/**
 * The desktop app's GPU worker tunes the matmul for its first stage like the node's engine thread, and keeps
 * the choice in gpu-tuning.json in the app's data directory: the page has no file system, so main reads the
 * file for it and writes what it measured. Here the page's loop runs on dawn.node (lavapipe) behind a real
 * MessageChannel; test/e2e/gpu-worker-tuning.test.ts runs it in Chromium.
 */
const config: GptConfig = { vocabSize: 32, contextLength: 8, width: 16, heads: 2, layers: 1, mlpRatio: 4 };
const spec = { config, range: wholeModel(config), shape: { batch: 2, seq: 8 }, seed: 3 };

let dir = '';
afterAll(() => (dir ? rm(dir, { recursive: true, force: true }) : undefined));

/** A fresh worker (a new page in the app), one stage through it, and what main logged. */
async function workerStage(cachePath: string): Promise<string[]> {
  const { port1, port2 } = new MessageChannel();
  const client = new GpuWorkerClient(asMainPort(port1));
  serveGpuPort(port2, dawnGpu());
  try {
    await client.request({ type: 'acquire' });
    const lines: string[] = [];
    const stage = await GpuWorkerStage.create(client, spec, {
      store: fileTuningStore(cachePath),
      log: (line) => lines.push(line),
    });
    // A second stage on the same device reuses the kernels: nothing more to say.
    const again = await client.request({ type: 'create-stage', spec });
    expect(again.log).toEqual([]);
    expect(again.tuningCache).toBeNull();
    stage.destroy();
    return lines;
  } finally {
    client.close();
    port2.close();
  }
}

describe('the GPU worker and the tuning cache', () => {
  it('measures once, logs the choice, has main write the cache, and reads it back in a new worker', async () => {
    dir = await mkdtemp(join(tmpdir(), 'tributary-worker-tuning-'));
    const cachePath = join(dir, 'gpu-tuning.json');

    const first = await workerStage(cachePath);
    const cache = JSON.parse(await readFile(cachePath, 'utf8')) as Record<string, { adapter: string }>;
    const [adapter] = Object.keys(cache);
    expect(Object.keys(cache)).toHaveLength(1);
    expect(first).toHaveLength(1);
    expect(first[0]).toMatch(/^matmul kernels \(measured in [\d.]+ s\): /);
    expect(first[0]).toContain(`${adapter}: forward lanes`);

    const second = await workerStage(cachePath);
    expect(second).toEqual([expect.stringMatching(/^matmul kernels \(cache\): /)]);

    await writeFile(cachePath, '{"half a file');
    const third = await workerStage(cachePath);
    expect(third[0]).toMatch(/ignoring the tuning cache, it is not valid JSON/);
    expect(third[1]).toMatch(/^matmul kernels \(measured in /);
    expect(Object.keys(JSON.parse(await readFile(cachePath, 'utf8')) as object)).toEqual([adapter]);
  }, 180_000);
});
