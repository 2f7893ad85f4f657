import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { rowHash, type RowValue } from '../../main/agent/ledger/chain.js';
import { Ledger, ReceiptRejected } from '../../main/agent/ledger/ledger.js';
import { appendPayout, downgradeToSchema2 } from './old-ledger.js';
import { NODE_ID, testCoordinator, testReceipt } from './signing.js';

describe('ledger', () => {
  let dir: string;
  let path: string;
  const coordinator = testCoordinator();
  const open = (): Ledger =>
    new Ledger(path, { trustedCoordinatorKeys: [coordinator.keyHex], nodeId: NODE_ID });

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tributary-ledger-'));
    path = join(dir, 'ledger.sqlite');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  function filled(): Ledger {
    const ledger = open();
    ledger.recordEvent('start', { version: '0.1.0' });
    for (let i = 1; i <= 5; i++) ledger.acceptReceipt(coordinator.sign(testReceipt(i)));
    ledger.recordWorkUnit({ runId: 'run-1', stage: 1, step: 1, microBatch: 0, tokens: 512, busyMs: 12.5 });
    ledger.applyStatement(
      coordinator.state({
        seq: 1,
        receipts: 5,
        confirmed: ['r-1', 'r-2'],
        revoked: [{ receiptId: 'r-3', reason: 'outputs disagreed with a replica' }],
      }),
    );
    return ledger;
  }

  it('uses WAL and records its schema version', () => {
    const ledger = open();
    expect(ledger.db.pragma('journal_mode', { simple: true })).toBe('wal');
    expect(ledger.db.prepare('SELECT MAX(version) AS v FROM migrations').get()).toEqual({ v: 4 });
    ledger.close();
  });

  it('stores verified receipts as pending credit and tracks confirmed and revoked', () => {
    const ledger = filled();
    const b = ledger.balance();
    expect(b.confirmedFlops).toBe(testReceipt(1).flops + testReceipt(2).flops);
    expect(b.revokedFlops).toBe(testReceipt(3).flops);
    expect(b.pendingFlops).toBe(testReceipt(4).flops + testReceipt(5).flops);
    expect(ledger.receipts().map((r) => [r.receiptId, r.status])).toEqual([
      ['r-5', 'pending'],
      ['r-4', 'pending'],
      ['r-3', 'revoked'],
      ['r-2', 'confirmed'],
      ['r-1', 'confirmed'],
    ]);
    expect(() => ledger.confirmCredit('r-3')).toThrow(/revoked; cannot become confirmed/);
    expect(ledger.verify()).toEqual({ ok: true, entries: 16, problems: [] });
    ledger.close();
  });

  it('refuses receipts whose signature, signer, node or shape is wrong, and ignores duplicates', () => {
    const ledger = open();
    const good = coordinator.sign(testReceipt(1));
    expect(ledger.acceptReceipt(good)).toBe('stored');
    expect(ledger.acceptReceipt(good)).toBe('duplicate');
    const tampered = { ...coordinator.sign(testReceipt(2)), receipt: { ...testReceipt(2), flops: 9e15 } };
    expect(() => ledger.acceptReceipt(tampered)).toThrow(/signature that does not verify/);
    expect(() => ledger.acceptReceipt(testCoordinator().sign(testReceipt(3)))).toThrow(
      /unknown coordinator key/,
    );
    expect(() => ledger.acceptReceipt(coordinator.sign(testReceipt(4, { nodeId: 'cd'.repeat(32) })))).toThrow(
      /another node/,
    );
    expect(() => ledger.acceptReceipt({ receipt: {} })).toThrow(ReceiptRejected);
    expect(ledger.receipts()).toHaveLength(1);
    ledger.close();
  });

  function tamper(sql: string): ReturnType<Ledger['verify']> {
    for (const suffix of ['', '-wal', '-shm']) rmSync(path + suffix, { force: true });
    filled().close();
    const raw = new Database(path);
    raw.exec(sql);
    raw.close();
    const ledger = open();
    const result = ledger.verify();
    ledger.close();
    return result;
  }

  it('finds an edited row and says which', () => {
    const result = tamper("UPDATE receipts SET flops = 9e15 WHERE receipt_id = 'r-4'");
    expect(result.ok).toBe(false);
    expect(result.problems.map((p) => p.message)).toEqual([
      'receipts entry #8 (receipt r-4) was edited: its contents no longer match its hash',
    ]);
  });

  it('finds a deleted row in the middle and at the end', () => {
    expect(
      tamper("DELETE FROM credits WHERE receipt_id = 'r-2' AND status = 'confirmed'").problems.map(
        (p) => p.message,
      ),
    ).toEqual(['entry #15 is missing (deleted)']);
    expect(tamper('DELETE FROM credits WHERE seq = 16').problems.map((p) => p.message)).toEqual([
      'entry #16 is missing (deleted)',
    ]);
  });

  it('finds a row whose hash was recomputed after editing (the next row no longer links to it)', () => {
    filled().close();
    const raw = new Database(path);
    const row = raw.prepare('SELECT * FROM events WHERE seq = 1').get() as Record<string, RowValue>;
    const forged = { ...row, detail: '{"version":"9.9.9"}' };
    raw
      .prepare('UPDATE events SET detail = ?, hash = ? WHERE seq = 1')
      .run(forged.detail, rowHash('events', forged));
    raw.close();
    const ledger = open();
    expect(ledger.verify().problems.map((p) => p.message)).toEqual([
      'receipts entry #2 (receipt r-1) does not link to the entry before it (an earlier entry was replaced)',
    ]);
    ledger.close();
  });

  it('stores which receipts a second replica verified, shows and exports it, and catches an edit to it', () => {
    const ledger = filled();
    ledger.applyStatement(
      coordinator.state({ seq: 2, receipts: 5, confirmed: ['r-4'], verified: ['r-4', 'r-1'] }),
    );
    expect(ledger.receipts().map((r) => [r.receiptId, r.status, r.verified])).toEqual([
      ['r-5', 'pending', false],
      ['r-4', 'confirmed', true],
      ['r-3', 'revoked', false],
      ['r-2', 'confirmed', false],
      ['r-1', 'confirmed', true],
    ]);
    expect(ledger.wallet().recentReceipts.filter((r) => r.verified)).toHaveLength(2);
    const csv = ledger.exportCsv('receipts').split('\r\n');
    expect(csv.filter((line) => /,confirmed,1,/.test(line)).map((line) => line.split(',')[1])).toEqual([
      'r-1',
      'r-4',
    ]);
    expect(ledger.verify()).toMatchObject({ ok: true, problems: [] });
    ledger.db.exec("UPDATE receipt_states SET verified = 1 WHERE receipt_id = 'r-2'");
    ledger.db.exec('UPDATE run_credit SET statement_flops = confirmed_flops');
    ledger.db.exec('UPDATE day_credit SET flops = 2 * flops');
    const edited = "was edited: it no longer matches the ledger's credits and the coordinator's statements";
    expect(ledger.verify().problems.map((p) => p.message)).toEqual([
      `the stored state of receipt r-2 (credit status or verification) ${edited}`,
      `the stored totals of run run-1 ${edited}`,
      `the stored earnings of 2026-11-20 ${edited}`,
    ]);
    ledger.close();
  });

  it('migrates an older ledger: drops an empty payouts table, keeps one with rows, and both still verify', () => {
    filled().close();
    downgradeToSchema2(path);
    const migrated = open();
    expect(
      migrated.db.prepare("SELECT name FROM sqlite_master WHERE name = 'payouts'").get(),
    ).toBeUndefined();
    expect(migrated.verify()).toEqual({ ok: true, entries: 16, problems: [] });
    migrated.close();

    downgradeToSchema2(path);
    appendPayout(path);
    // `ledger verify` and `export` of this version read it as it is, without migrating it.
    const readonly = new Ledger(path, { readonly: true });
    expect(readonly.verify()).toEqual({ ok: true, entries: 17, problems: [] });
    expect(readonly.exportCsv('receipts').split('\r\n')[1]).toContain(',r-1,run-1,');
    readonly.close();
    const kept = open();
    expect(kept.db.prepare('SELECT COUNT(*) AS n FROM payouts').get()).toEqual({ n: 1 });
    expect(kept.verify()).toEqual({ ok: true, entries: 17, problems: [] });
    // Its state is rebuilt from the chain: the same balance and receipts as before the downgrade.
    expect(kept.receipts().map((r) => r.status)).toEqual([
      'pending',
      'pending',
      'revoked',
      'confirmed',
      'confirmed',
    ]);
    kept.close();
    const raw = new Database(path);
    raw.exec('DELETE FROM payouts');
    raw.close();
    const tampered = open();
    expect(tampered.verify().problems.map((p) => p.message)).toEqual(['entry #17 is missing (deleted)']);
    tampered.close();
  });

  it('exports CSV with the receipts and their credit state', () => {
    const ledger = filled();
    const csv = ledger.exportCsv('receipts').split('\r\n');
    expect(csv[0]).toBe(
      'seq,receipt_id,run_id,node_id,stage,step,micro_batch,tokens,flops,issued_at,status,verified,signature,coordinator_key,hash',
    );
    expect(csv).toHaveLength(7);
    expect(csv[3]).toContain(',r-3,run-1,');
    expect(csv[3]).toContain(',revoked,');
    const events = ledger.exportCsv('events');
    expect(events.split('\r\n')[0]).toBe('seq,at,kind,detail,prev_hash,hash');
    expect(events).toContain('"{""version"":""0.1.0""}"');
    ledger.close();
    expect(readFileSync(path).length).toBeGreaterThan(0);
  });
});
