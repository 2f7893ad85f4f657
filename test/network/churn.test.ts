import { join } from 'node:path';
import { afterAll, expect, test } from 'vitest';
import { spawnNode, until, type CliProcess } from './processes.js';
import { startCoordinator, tempDir, tinyConfig } from './helpers.js';

const STEPS = 14;
const config = tinyConfig({ steps: STEPS, checkpointEvery: 3, taskTimeoutMs: 20_000 });
const { dir, cleanup } = tempDir();
const children: CliProcess[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.kill()));
  cleanup();
});

test(
  'a node SIGKILLed mid-run: the run goes on, nothing lost or credited twice, receipts match balances',
  { timeout: 240_000 },
  async () => {
    const coordinator = await startCoordinator(config, join(dir, 'coord'));
    const keys = [0, 1, 2, 3].map((i) => join(dir, `node-${i}.key`));
    children.push(...keys.map((k) => spawnNode(coordinator.url, k)));
    let replays = 0;
    coordinator.on('step', (e: { attempts: number }) => (replays += e.attempts - 1));

    await until('step 4', () => coordinator.status().step >= 4);
    const victim = children.find((c) => coordinator.status().stages[0]!.nodes.includes(c.nodeId() ?? ''))!;
    expect(victim).toBeDefined();
    await victim.kill('SIGKILL');
    const killedAt = coordinator.status().step;

    // The same identity comes back later and must be handed every receipt it missed.
    await until('two more steps', () => coordinator.status().step >= killedAt + 2);
    const revived = spawnNode(coordinator.url, keys[children.indexOf(victim)]!);
    children.push(revived);
    await coordinator.finished;

    const status = coordinator.status();
    expect(status.step).toBe(STEPS);
    expect(coordinator.store.losses().map((l) => l.step)).toEqual(Array.from({ length: STEPS }, (_, i) => i));
    // Every (step, stage, micro-batch) credited exactly once.
    const units = STEPS * config.stages * config.microBatchesPerStep;
    expect(status.receipts).toBe(units);
    const balances = coordinator.store.balances();
    expect(balances.reduce((n, b) => n + b.units, 0)).toBe(units);
    console.log(
      `killed a stage-0 node at step ${killedAt}; ${replays} step attempt(s) replayed; balances: ${balances.map((b) => b.units).join(', ')}`,
    );

    // What the nodes hold (the killed process's log plus its revival's) equals the coordinator's balances.
    const held = (nodeId: string): Map<string, number> => {
      const all = new Map<string, number>();
      for (const c of children) if (c.nodeId() === nodeId) for (const [id, f] of c.receipts()) all.set(id, f);
      return all;
    };
    await until('receipts delivered', () => balances.every((b) => held(b.nodeId).size === b.units), 30_000);
    for (const b of balances) {
      const flops = [...held(b.nodeId).values()].reduce((x, y) => x + y, 0);
      expect(flops).toBeCloseTo(b.flops, 0);
    }
    await coordinator.close();
  },
);
