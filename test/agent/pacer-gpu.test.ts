import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Agent } from '../../main/agent/agent.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { testDevice } from '../helpers/gpu.js';
import { createGpuWork, pacedBusyFraction, type GpuWork } from './gpu-work.js';
import { openQuietAgent } from '../helpers/agent.js';

describe('duty-cycle pacing of real GPU work (dawn.node)', () => {
  let device: GPUDevice;
  let work: GpuWork;
  const dir = mkdtempSync(join(tmpdir(), 'tributary-pacer-'));

  beforeAll(async () => {
    ({ device } = await testDevice());
    work = createGpuWork(device);
    await work.calibrate(40);
  });
  afterAll(() => {
    work.destroy();
    device.destroy();
    rmSync(dir, { recursive: true, force: true });
  });

  it('a 50% duty cycle keeps the GPU busy 45-55% of the wall time', async () => {
    const agent = await Agent.open({
      dataDir: dir,
      settings: { ...defaultSettings, runWhen: 'always', dutyCyclePct: 50 },
      telemetrySources: [],
      hostSensors: false,
      tickMs: 0,
    });
    const result = await pacedBusyFraction(work, agent.gate, 4000);
    console.log(
      `busy ${(result.fraction * 100).toFixed(1)}% over ${result.wallMs.toFixed(0)} ms, ${result.units} units of ` +
        `${(result.busyMs / result.units).toFixed(1)} ms`,
    );
    expect(result.units).toBeGreaterThan(5);
    expect(result.fraction).toBeGreaterThanOrEqual(0.45);
    expect(result.fraction).toBeLessThanOrEqual(0.55);
    await agent.stop();
  });

  it('a paused agent holds the next unit until resumed, and the unit in flight completes', async () => {
    const agent = await openQuietAgent({
      dataDir: dir,
      settings: { ...defaultSettings, runWhen: 'always' },
    });
    await agent.gate.waitUntilAllowed();
    const inFlight = work.unit();
    await agent.command({ type: 'pause', duration: 'indefinitely' });
    expect(await inFlight).toBeGreaterThan(0);
    await agent.gate.afterWork(1);
    let started = false;
    const next = agent.gate.waitUntilAllowed().then(() => (started = true));
    await new Promise((r) => setTimeout(r, 100));
    expect(started).toBe(false);
    const aborted = new AbortController();
    const cancelled = agent.gate.waitUntilAllowed(aborted.signal);
    aborted.abort(new Error('runtime shutting down'));
    await expect(cancelled).rejects.toThrow('runtime shutting down');
    await agent.command({ type: 'resume' });
    await next;
    expect(started).toBe(true);
    await agent.stop();
  });
});
