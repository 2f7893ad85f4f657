import { EventEmitter } from 'node:events';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import type { GpuWorkerClient } from '../../main/electron/gpu-worker-client.js';
import { GpuWorkerSupervisor } from '../../main/electron/gpu-worker-supervisor.js';
import { wireLifecycle } from '../../main/electron/lifecycle.js';
import { RotatingLog } from '../../main/electron/rotating-log.js';

const dir = mkdtempSync(join(tmpdir(), 'tributary-lifecycle-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('rotating log', () => {
  it('rotates by size and keeps only the newest files', () => {
    const log = new RotatingLog({ dir: join(dir, 'logs'), maxBytes: 100, keep: 2 });
    for (let i = 0; i < 12; i++) log.write(`${String(i).padStart(2, '0')} ${'x'.repeat(36)}\n`);
    log.close();
    const live = readFileSync(log.file, 'utf8');
    expect(live.startsWith('10 ')).toBe(true);
    expect(readFileSync(`${log.file}.1`, 'utf8').startsWith('08 ')).toBe(true);
    expect(readFileSync(`${log.file}.2`, 'utf8').startsWith('06 ')).toBe(true);
    expect(existsSync(`${log.file}.3`)).toBe(false);
  });
});

/** A worker as the supervisor sees it: events and a close it can trigger. */
class FakeWorker extends EventEmitter {
  closed = false;
  onEvent(listener: (event: unknown) => void) {
    this.on('event', listener);
  }
  onClosed(listener: (reason: string) => void) {
    this.on('closed', listener);
  }
  close(reason = 'closed') {
    if (this.closed) return;
    this.closed = true;
    this.emit('closed', reason);
  }
}

describe('GPU worker supervisor', () => {
  it('restarts a crashed or device-lost worker with a growing delay and says why meanwhile', async () => {
    const problems: (string | null)[] = [];
    const timers: { ms: number; run: () => void }[] = [];
    const workers: FakeWorker[] = [];
    let now = 0;
    let failOpen = false;
    const supervisor = new GpuWorkerSupervisor({
      open: async () => {
        if (failOpen) throw new Error('no adapter');
        const worker = new FakeWorker();
        workers.push(worker);
        return worker as unknown as GpuWorkerClient;
      },
      onProblem: (problem) => problems.push(problem),
      now: () => now,
      setTimeout: (run, ms) => timers.push({ ms, run }),
    });
    supervisor.start();
    await new Promise((r) => setImmediate(r));
    expect(supervisor.current).toBe(workers[0]);
    expect(problems).toEqual([null]);

    workers[0]!.emit('event', { type: 'device-lost', reason: 'unknown', message: 'GPU reset' });
    expect(supervisor.current).toBeNull();
    expect(problems.at(-1)).toBe('The GPU worker stopped (GPU device lost: GPU reset); restarting it in 1 s');
    failOpen = true;
    timers.shift()!.run();
    await new Promise((r) => setImmediate(r));
    expect(problems.at(-1)).toBe('The GPU worker stopped (no adapter); restarting it in 2 s');
    failOpen = false;
    timers.shift()!.run();
    await new Promise((r) => setImmediate(r));
    expect(supervisor.current).toBe(workers[1]);
    expect(problems.at(-1)).toBeNull();

    // A worker that stayed up a while starts the backoff over.
    now += 120_000;
    workers[1]!.close('its process ended: crashed');
    expect(problems.at(-1)).toBe('The GPU worker stopped (its page closed); restarting it in 1 s');
    supervisor.stop();
  });
});

describe('lifecycle', () => {
  it('hands work back before sleep, reconnects after, and quits cleanly on shutdown and session end', () => {
    const power = new EventEmitter();
    const calls: string[] = [];
    const lifecycle = wireLifecycle(
      power,
      { suspend: async () => void calls.push('suspend'), resume: async () => void calls.push('resume') },
      () => calls.push('quit'),
      () => undefined,
    );
    power.emit('suspend');
    power.emit('resume');
    let delayed = false;
    power.emit('shutdown', { preventDefault: () => (delayed = true) });
    lifecycle.sessionEnded();
    expect(calls).toEqual(['suspend', 'resume', 'quit', 'quit']);
    expect(delayed).toBe(true);
  });
});
