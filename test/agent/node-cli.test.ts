import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../main/agent/ledger/ledger.js';
import { startCoordinator, tempDir, tinyConfig } from '../network/helpers.js';
import { CliProcess, until } from '../network/processes.js';

const { dir, cleanup } = tempDir('tributary-node-cli-');
const children: CliProcess[] = [];
afterAll(async () => {
  await Promise.all(children.map((c) => c.kill()));
  cleanup();
});

function node(args: string[]): CliProcess {
  const child = new CliProcess(['node', ...args]);
  children.push(child);
  return child;
}

describe('tributary node hosts the agent', () => {
  it(
    'trains under the agent, keeps every receipt in its ledger, serves the dashboard and stops cleanly on SIGINT',
    { timeout: 120_000 },
    async () => {
      const config = tinyConfig({ stages: 1, steps: 4, microBatchesPerStep: 2 });
      const coordinator = await startCoordinator(config, join(dir, 'coord'));
      const dataDir = join(dir, 'agent');
      const child = node([
        '--coordinator',
        coordinator.url,
        '--engine',
        'cpu',
        '--key',
        join(dir, 'node.key'),
        '--data-dir',
        dataDir,
        '--run-when',
        'always',
        '--dashboard-port',
        '0',
        '--log-level',
        'debug',
      ]);
      await coordinator.finished;
      const nodeId = child.nodeId()!;
      const balance = coordinator.store.balances().find((b) => b.nodeId === nodeId)!;
      expect(balance.units).toBe(config.steps * config.microBatchesPerStep);
      await until('receipts delivered', () => child.receipts().size === balance.units, 30_000);
      expect(child.output.some((l) => /^dashboard: http:\/\/127\.0\.0\.1:\d+\//.test(l))).toBe(true);

      expect(await child.kill('SIGINT')).toBe(0);
      expect(child.output.some((l) => l.startsWith('SIGINT: finishing or handing back'))).toBe(true);
      await coordinator.close();

      // The ledger the agent flushed on the way out holds exactly what the coordinator credited, and verifies.
      const ledger = new Ledger(join(dataDir, 'ledger.sqlite'));
      try {
        const { confirmedFlops, pendingFlops } = ledger.balance();
        expect(confirmedFlops + pendingFlops).toBeCloseTo(balance.flops, 0);
        expect(ledger.verify().ok).toBe(true);
        // Every task the engine ran is in the ledger too: one forwardBackward per micro-batch on one stage.
        const work = ledger.db
          .prepare('SELECT COUNT(*) AS units, SUM(tokens) AS tokens FROM work_units')
          .get();
        const { batch, seq } = config.microBatch;
        expect(work).toEqual({ units: balance.units, tokens: balance.units * batch * seq });
      } finally {
        ledger.close();
      }
    },
  );

  it(
    'waits with a readable reason while the policy says no (idle-only on a box that reports no idle time)',
    { timeout: 60_000 },
    async () => {
      const coordinator = await startCoordinator(
        tinyConfig({ stages: 1, steps: 2 }),
        join(dir, 'coord-idle'),
      );
      const child = node([
        '--coordinator',
        coordinator.url,
        '--engine',
        'cpu',
        '--key',
        join(dir, 'idle.key'),
        '--data-dir',
        join(dir, 'idle'),
        '--run-when',
        'idle',
        '--no-dashboard',
      ]);
      await until('a waiting status line', () => child.output.some((l) => l.startsWith('Waiting: ')), 30_000);
      expect(coordinator.status().step).toBe(0);
      expect(await child.kill('SIGTERM')).toBe(0);
      await coordinator.close();
    },
  );

  it(
    'keeps its key in --data-dir and says so, with a hint, while the coordinator cannot be reached',
    { timeout: 60_000 },
    async () => {
      const dataDir = join(dir, 'unreachable');
      const child = node(['--coordinator', 'ws://127.0.0.1:9', '--data-dir', dataDir, '--no-dashboard']);
      await until(
        'a line saying the coordinator cannot be reached',
        () =>
          child.output.some((l) =>
            /cannot reach the coordinator at ws:\/\/127\.0\.0\.1:9 \(.*ECONNREFUSED.*\); is it running, and are the host and port right\? Retrying in [\d.]+ s/.test(
              l,
            ),
          ),
        30_000,
      );
      expect(existsSync(join(dataDir, 'node.key'))).toBe(true);
      expect(await child.kill('SIGTERM')).toBe(0);
    },
  );

  it.each([
    [['--duty-cycle', '150'], /duty-cycle/],
    [['--settings', 'SETTINGS'], /gpuTempLimitC/],
    [['--settings', join(dir, 'missing.json')], /cannot read settings/],
    [['--ca', join(dir, 'missing.pem')], /cannot read --ca .*missing\.pem/],
    [['--coordinator', 'notaurl'], /expected a URL such as ws:\/\/HOST:7700/],
    [['--coordinator', 'http://127.0.0.1:7700'], /use ws:\/\/127\.0\.0\.1:7700/],
    [['--coordinator', 'https://example.org'], /use wss:\/\/example\.org/],
  ])('refuses bad input %j with exit code 2, says why and creates nothing', async (args, message) => {
    const settings = join(dir, 'bad-settings.json');
    writeFileSync(settings, JSON.stringify({ gpuTempLimitC: 300 }));
    const dataDir = join(dir, `usage-${args.join('').replace(/\W/g, '')}`);
    const child = node([
      '--coordinator',
      'ws://127.0.0.1:9',
      '--data-dir',
      dataDir,
      ...args.map((a) => (a === 'SETTINGS' ? settings : a)),
    ]);
    const stderr: string[] = [];
    child.proc.stderr!.on('data', (d: Buffer) => stderr.push(d.toString()));
    expect(await child.exited).toBe(2);
    expect(stderr.join('')).toMatch(message);
    expect(existsSync(dataDir)).toBe(false);
  });
});
