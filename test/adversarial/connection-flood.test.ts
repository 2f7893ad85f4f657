import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { startCoordinator, tempDir, tinyConfig } from '../network/helpers.js';
import { CliProcess, until } from '../network/processes.js';

const { dir, cleanup } = tempDir('tributary-flood-');
afterAll(cleanup);

function rssMb(pid: number): number {
  const kb = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return Number(kb) / 1024;
}

/** Opens a socket that never authenticates; resolves with its close code (1006: cut off without a close). */
function stranger(
  url: string,
  payload?: Buffer,
): { closed: Promise<number>; opened: Promise<boolean>; ws: WebSocket } {
  const ws = new WebSocket(url, { perMessageDeflate: false });
  ws.on('error', () => {});
  const opened = new Promise<boolean>((resolve) => {
    ws.once('open', () => {
      if (payload) ws.send(payload);
      resolve(true);
    });
    ws.once('close', () => resolve(false));
  });
  return { ws, opened, closed: new Promise((resolve) => ws.once('close', (code) => resolve(code))) };
}

describe('connections before authentication are capped', () => {
  it.skipIf(process.platform !== 'linux')(
    'a flood of sockets sending huge frames before auth leaves the coordinator’s memory bounded',
    async () => {
      const coordinator = new CliProcess([
        'coordinator',
        '--port',
        '0',
        '--db',
        join(dir, 'flood', 'coordinator.db'),
        '--log-level',
        'info',
      ]);
      try {
        await until('the coordinator listens', () => coordinator.lines.some((l) => l.url), 60_000);
        const url = coordinator.lines.find((l) => l.url)!.url as string;
        const pid = coordinator.proc.pid!;
        const before = rssMb(pid);
        // 24 strangers, each sending one 4 MiB frame (the wire limit allows 60 MiB once authenticated).
        const frame = Buffer.alloc(4 * 1024 * 1024, 7);
        const flood = Array.from({ length: 24 }, () => stranger(url, frame));
        const codes = await Promise.all(flood.map((s) => s.closed));
        const after = rssMb(pid);
        expect(codes.every((c) => c === 1006)).toBe(true);
        expect(after - before).toBeLessThan(40);
        const status = (await (await fetch(url.replace('ws', 'http') + '/status')).json()) as {
          state: string;
        };
        expect(status.state).toBe('waiting');
      } finally {
        await coordinator.kill('SIGTERM');
      }
    },
    90_000,
  );

  it('refuses unauthenticated sockets beyond the per-address cap, and frees a slot when one goes', async () => {
    const coordinator = await startCoordinator(tinyConfig(), join(dir, 'cap'), {
      connectionLimits: { maxUnauthenticatedPerAddress: 4 },
    });
    try {
      const sockets = Array.from({ length: 10 }, () => stranger(coordinator.url));
      const opened = await Promise.all(sockets.map((s) => s.opened));
      await new Promise((r) => setTimeout(r, 200));
      const open = sockets.filter((s) => s.ws.readyState === WebSocket.OPEN);
      expect(opened.filter(Boolean).length).toBeGreaterThanOrEqual(4);
      expect(open).toHaveLength(4);
      open[0]!.ws.close();
      await open[0]!.closed;
      await new Promise((r) => setTimeout(r, 100));
      const another = stranger(coordinator.url);
      expect(await another.opened).toBe(true);
      await new Promise((r) => setTimeout(r, 200));
      expect(another.ws.readyState).toBe(WebSocket.OPEN);
      for (const s of [...sockets, another]) s.ws.terminate();
    } finally {
      await coordinator.close();
    }
  }, 60_000);
});
