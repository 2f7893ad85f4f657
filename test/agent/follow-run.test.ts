import { EventEmitter } from 'node:events';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, expect, it } from 'vitest';
import { followRun } from '../../main/agent/follow-run.js';
import { openQuietAgent } from '../helpers/agent.js';

const dir = mkdtempSync(join(tmpdir(), 'tributary-follow-run-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

it('while training, the network line says how many neighbours are reached only through a relay', async () => {
  const agent = await openQuietAgent({
    dataDir: dir,
  });
  const runtime = new EventEmitter();
  const unfollow = followRun(agent, runtime, { url: 'ws://127.0.0.1:7700', coordinatorKey: null });
  try {
    runtime.emit('connected');
    runtime.emit('runState', { state: 'training', reason: 'training' });
    runtime.emit('assigned', { index: 1, count: 2, firstBlock: 1, endBlock: 2 });
    expect(agent.snapshot().network.detail).toBe('Training stage 2 of 2 (block 2)');
    runtime.emit('peerLinks', { a: { in: 'direct', out: 'direct' }, b: { in: 'relay' } });
    expect(agent.snapshot().network.detail).toBe(
      'Training stage 2 of 2 (block 2); 1 neighbour reached only through a relay',
    );
    // Disconnected, a route learnt late does not bring the training line back.
    runtime.emit('retrying', { delayMs: 2000, why: 'connection lost' });
    runtime.emit('peerLinks', { b: { in: 'relay' }, c: { out: 'relay' } });
    expect(agent.snapshot().network.phase).toBe('disconnected');
    runtime.emit('connected');
    runtime.emit('assigned', { index: 1, count: 2, firstBlock: 1, endBlock: 2 });
    expect(agent.snapshot().network.detail).toBe(
      'Training stage 2 of 2 (block 2); 2 neighbours reached only through a relay',
    );
  } finally {
    unfollow();
    await agent.stop();
  }
});
