import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { deviceName } from '../../gpu/device/acquire.js';
import {
  MATMUL_TUNING_VERSION,
  tuneMatmul,
  tuningLogLine,
  type TuneOptions,
} from '../../gpu/engine/autotune.js';
import { DEFAULT_DISPATCH_FLOPS } from '../../gpu/kernels/matmul.js';
import { fileTuningStore } from '../../main/gpu-host/tuning-store.js';
import { fileDevice } from './harness.js';

const gpu = fileDevice();
const dims = { rows: 64, inDim: 32, outDim: 64 };
const products = { forward: [dims], backwardInput: [dims], backwardWeight: [dims] };
let dir: string;
let path: string;

beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'tributary-tune-'));
  path = join(dir, 'gpu-tuning.json');
});
afterAll(() => rm(dir, { recursive: true, force: true }));

async function tune(lines: string[]) {
  const options: TuneOptions = {
    products,
    store: fileTuningStore(path),
    log: (l) => lines.push(l),
    targetMs: 5,
  };
  return tuneMatmul(gpu.device, options);
}

describe('matmul autotuning per adapter', () => {
  it('measures on first use and writes the choice to the cache file', async () => {
    const lines: string[] = [];
    const first = await tune(lines);
    expect(first.source).toBe('measured');
    // lavapipe: the lanes kernel serves these products; only its speed (the dispatch cap) is measured.
    expect(first.tuning.family).toBe('lanes');
    expect(first.tuning.gflops.forward).toBeGreaterThan(0);
    expect(first.tuning.maxDispatchFlops).toBeGreaterThanOrEqual(DEFAULT_DISPATCH_FLOPS);
    const file = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    expect(file[deviceName(gpu.device)]).toEqual(first.tuning);
    expect(lines).toEqual([]);
    // The one line a host logs: the adapter, each kind's kernel, and that it was measured.
    const line = tuningLogLine(first);
    expect(line).toMatch(/^matmul kernels \(measured in \d+\.\d s\): /);
    expect(line).toContain(`${deviceName(gpu.device)}: forward lanes`);
    expect(line).toMatch(/backwardWeight lanes [\d.]+ GFLOP\/s; dispatches up to/);
  });

  it('reuses the cached choice without measuring', async () => {
    const lines: string[] = [];
    const before = JSON.parse(await readFile(path, 'utf8')) as Record<string, unknown>;
    const again = await tune(lines);
    expect(again.source).toBe('cache');
    expect(again.seconds).toBe(0);
    expect(again.tuning).toEqual(before[deviceName(gpu.device)]);
    expect(lines).toEqual([]);
    expect(tuningLogLine(again)).toMatch(/^matmul kernels \(cache\): /);
  });

  it('ignores a corrupted cache with a message, measures again and repairs the file', async () => {
    await writeFile(path, '{"half a file');
    const lines: string[] = [];
    const result = await tune(lines);
    expect(result.source).toBe('measured');
    expect(lines[0]).toMatch(/ignoring the tuning cache, it is not valid JSON/);
    expect(JSON.parse(await readFile(path, 'utf8'))).toHaveProperty([deviceName(gpu.device)]);
  });

  it.each([
    ['a stale version', { version: MATMUL_TUNING_VERSION - 1 }, /stale/],
    ['a tile the engine does not offer', { kernels: { forward: { tile: { bm: 3 } } } }, /does not offer/],
    [
      'a subgroup-matrix kernel this adapter does not offer',
      { kernels: { forward: { subgroupMatrix: { m: 16, n: 16, k: 16, tm: 2, tn: 2, subgroupSize: 32 } } } },
      /does not offer/,
    ],
    ['another precision', { precision: 'mixed' }, /tuned for mixed precision, not fp32/],
    ['a dispatch cap below the default guard', { maxDispatchFlops: 1 }, /bad dispatch cap/],
  ])('ignores an entry with %s, with a message', async (_name, change, message) => {
    const name = deviceName(gpu.device);
    const file = JSON.parse(await readFile(path, 'utf8')) as Record<string, Record<string, unknown>>;
    const entry = file[name]!;
    const kernels = (entry.kernels ?? {}) as Record<string, unknown>;
    const bad = {
      ...entry,
      ...change,
      kernels: { ...kernels, ...((change as { kernels?: object }).kernels ?? {}) },
    };
    await writeFile(path, JSON.stringify({ ...file, [name]: bad }));
    const lines: string[] = [];
    const result = await tune(lines);
    expect(result.source).toBe('measured');
    expect(lines[0]).toMatch(message);
    expect(lines[0]).toContain('ignoring the cached entry');
  });
});
