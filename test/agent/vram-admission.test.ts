import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { estimateStageMemoryBytes } from '../../gpu/engine/stage-layout.js';
import { admitUnderCap } from '../../main/agent/throttle/vram.js';
import type { NodeRuntime } from '../../main/node/runtime.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';

const big = { vocabSize: 256, contextLength: 64, width: 1024, heads: 8, layers: 4, mlpRatio: 4 };
const range = { index: 0, count: 1, firstBlock: 0, endBlock: 4 };
const shape = { batch: 4, seq: 64 };

describe('the VRAM cap', () => {
  it('refuses a stage the engine estimates over the cap, and passes the cap on as maxBytes', () => {
    const bytes = estimateStageMemoryBytes(big, range, shape);
    expect(bytes).toBeGreaterThan(128e6);
    const seen: number[] = [];
    let cap: number | null = 128;
    const admit = admitUnderCap(
      estimateStageMemoryBytes,
      () => cap,
      (_r, b) => seen.push(b),
    );
    expect(admit(range, { config: big, shape })).toEqual({
      ok: false,
      reason: expect.stringMatching(/^this stage needs [\d.]+ [MG]B of GPU memory, above your 128 MB limit$/),
    });
    cap = Math.ceil(bytes / 1e6);
    expect(admit(range, { config: big, shape })).toEqual({ ok: true, maxBytes: cap * 1e6 });
    cap = null;
    expect(admit(range, { config: big, shape })).toEqual({ ok: true, maxBytes: undefined });
    expect(seen).toEqual([bytes, bytes, bytes]);
  });

  const { dir, cleanup } = tempDir('tributary-vram-');
  const nodes: NodeRuntime[] = [];
  afterAll(async () => {
    await Promise.all(nodes.map((n) => n.stop()));
    cleanup();
  });

  it('is applied by the node before anything is allocated', { timeout: 60_000 }, async () => {
    const coordinator = await startCoordinator(tinyConfig({ stages: 1, steps: 2 }), join(dir, 'coord'));
    let built = 0;
    const node = startNode(coordinator.url, 'cpu', {
      admitStage: () => ({
        ok: false,
        reason: 'this stage needs 9.0 GB of GPU memory, above your 4.1 GB limit',
      }),
      createStage: () => {
        built++;
        return Promise.reject(new Error('must not be reached'));
      },
    });
    nodes.push(node);
    await until('a refusal', () => node.status.reason.startsWith('refused'), 30_000);
    expect(node.status.reason).toBe(
      'refused stage 1 of 1 (blocks 1–2): this stage needs 9.0 GB of GPU memory, above your 4.1 GB limit',
    );
    expect(built).toBe(0);
    expect(coordinator.status().step).toBe(0);
    await node.stop();
    await coordinator.close();
  });
});
