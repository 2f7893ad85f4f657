import { execFile } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import Database from 'better-sqlite3';
import { afterAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../main/agent/ledger/ledger.js';
import { testCoordinator, testReceipt } from './signing.js';

const repoRoot = resolve(import.meta.dirname, '..', '..');

function cli(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((done) => {
    execFile(
      process.execPath,
      ['--import', 'tsx', 'main/cli/index.ts', ...args],
      { cwd: repoRoot },
      (err, stdout, stderr) =>
        done({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, stdout, stderr }),
    );
  });
}

describe('tributary ledger verify|export', () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-ledger-cli-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const db = join(dir, 'ledger.sqlite');
  const coordinator = testCoordinator();
  const ledger = new Ledger(db);
  for (let i = 1; i <= 3; i++) ledger.acceptReceipt(coordinator.sign(testReceipt(i)));
  ledger.applyStatement(coordinator.state({ seq: 1, receipts: 3, confirmed: ['r-2'] }));
  ledger.close();

  it('verifies an intact ledger, exports CSV, then names the edited row and fails', async () => {
    const ok = await cli(['ledger', 'verify', '--data-dir', dir]);
    expect(ok).toMatchObject({ code: 0 });
    expect(ok.stdout).toMatch(
      /^Ledger intact: 8 entries, hash chain, signed head and coordinator signatures verified/,
    );

    const out = join(dir, 'receipts.csv');
    const exported = await cli(['ledger', 'export', '--db', db, '--out', out]);
    expect(exported.stderr).toContain(`Wrote 3 receipts row(s) to ${out}`);
    const csv = readFileSync(out, 'utf8').split('\r\n');
    expect(csv[0]!.startsWith('seq,receipt_id,')).toBe(true);
    expect(csv.filter((l) => l.includes(',confirmed,'))).toHaveLength(1);

    const raw = new Database(db);
    raw.prepare("UPDATE receipts SET tokens = 99999 WHERE receipt_id = 'r-2'").run();
    raw.close();
    const bad = await cli(['ledger', 'verify', '--db', db]);
    expect(bad.code).toBe(1);
    expect(bad.stdout).toContain('Ledger TAMPERED');
    expect(bad.stdout).toContain('receipts entry #3 (receipt r-2) was edited');

    const missing = await cli(['ledger', 'verify', '--db', join(dir, 'nope.sqlite')]);
    expect(missing.code).toBe(2);
    expect(missing.stderr).toContain('no ledger at');
    expect((await cli(['ledger', 'export', '--db', db, '--table', 'sqlite_master'])).stderr).toMatch(
      /expected one of receipts/,
    );

    truncateSync(db, 0);
    const empty = await cli(['ledger', 'verify', '--data-dir', dir]);
    expect(empty.code).toBe(1);
    expect(empty.stderr).toContain('the ledger file is empty (0 bytes)');
    expect(statSync(db).size).toBe(0);
  }, 60_000);
});
