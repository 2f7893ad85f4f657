import { spawn } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../main/agent/ledger/ledger.js';

const repoRoot = resolve(import.meta.dirname, '..', '..');
const KILLS = 16;

/** Runs the writer, kills it with SIGKILL `delayMs` after it is ready, returns the last head it reported. */
function writeThenKill(path: string, delayMs: number): Promise<number> {
  return new Promise((resolveRun, reject) => {
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/agent/ledger-writer.ts', path], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    let timer: NodeJS.Timeout | null = null;
    child.stdout.setEncoding('utf8').on('data', (chunk: string) => {
      out += chunk;
      if (timer === null && out.includes('ready')) timer = setTimeout(() => child.kill('SIGKILL'), delayMs);
    });
    child.stderr.setEncoding('utf8').on('data', (chunk: string) => (err += chunk));
    child.on('exit', (code, signal) => {
      if (signal !== 'SIGKILL') return reject(new Error(`writer exited early (${code}): ${err}`));
      const heads = [...out.matchAll(/(?:ready|committed) (\d+)\n/g)].map((m) => Number(m[1]));
      resolveRun(heads.at(-1) ?? 0);
    });
  });
}

describe('ledger under SIGKILL', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-kill-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it(`keeps a valid chain and every acknowledged commit across ${KILLS} kills at random moments`, async () => {
    const path = join(dir, 'ledger.sqlite');
    let previous = 0;
    for (let round = 0; round < KILLS; round++) {
      const delayMs = 5 + Math.floor(Math.random() * 250);
      const acknowledged = await writeThenKill(path, delayMs);
      const ledger = new Ledger(path);
      const result = ledger.verify();
      ledger.close();
      expect(result.problems, `round ${round} (killed after ${delayMs} ms)`).toEqual([]);
      expect(result.entries).toBeGreaterThanOrEqual(acknowledged);
      expect(result.entries).toBeGreaterThanOrEqual(previous);
      previous = result.entries;
    }
    expect(previous).toBeGreaterThan(KILLS);
  }, 120_000);
});
