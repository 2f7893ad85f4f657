import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  statSync,
  truncateSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { Agent, LedgerUnusable } from '../../main/agent/agent.js';
import { GENESIS_HASH, rowHash, type RowValue } from '../../main/agent/ledger/chain.js';
import { headPath } from '../../main/agent/ledger/head-file.js';
import { inspectLedger } from '../../main/agent/ledger/health.js';
import { Ledger } from '../../main/agent/ledger/ledger.js';
import { CHAINED_TABLES } from '../../main/agent/ledger/schema.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { testCoordinator, testReceipt } from './signing.js';

/**
 * An attacker with write access to the ledger file: after editing rows they recompute every hash and the
 * chain head, so the hash chain alone holds. What must still catch them is the coordinator's signatures
 * (receipts, statements) and the node-signed head file beside the ledger.
 */
function rechain(path: string, edit: (db: Database.Database) => void): void {
  const db = new Database(path);
  edit(db);
  const rows: { table: string; row: Record<string, RowValue> }[] = [];
  for (const table of CHAINED_TABLES)
    for (const row of db.prepare(`SELECT * FROM ${table}`).all() as Record<string, RowValue>[])
      rows.push({ table, row });
  rows.sort((a, b) => Number(a.row.seq) - Number(b.row.seq));
  let prev = GENESIS_HASH;
  rows.forEach(({ table, row }, i) => {
    const renumbered = { ...row, seq: i + 1, prev_hash: prev };
    const hash = rowHash(table, renumbered);
    db.prepare(`UPDATE ${table} SET seq = ?, prev_hash = ?, hash = ? WHERE seq = ?`).run(
      i + 1,
      prev,
      hash,
      row.seq,
    );
    prev = hash;
  });
  db.prepare('UPDATE chain_head SET seq = ?, hash = ?').run(rows.length, prev);
  db.close();
}

describe('ledger integrity against a local attacker', () => {
  let dir: string;
  let path: string;
  const coordinator = testCoordinator();
  const node = Ed25519Keys.generate();
  const receipt = (n: number) => coordinator.sign(testReceipt(n, { nodeId: node.publicKeyHex }));
  const open = (): Ledger =>
    new Ledger(path, {
      trustedCoordinatorKeys: [coordinator.keyHex],
      nodeId: node.publicKeyHex,
      headSigner: node,
    });
  const messages = (): string[] => {
    const ledger = new Ledger(path, { readonly: true });
    try {
      return ledger.verify().problems.map((p) => p.message);
    } finally {
      ledger.close();
    }
  };

  /** Five receipts; the coordinator's statement #1 confirms r-1 and says it sent 5; one later event. */
  function filled(): void {
    const ledger = open();
    for (let i = 1; i <= 5; i++) ledger.acceptReceipt(receipt(i));
    ledger.applyStatement(
      coordinator.state({ seq: 1, nodeId: node.publicKeyHex, receipts: 5, confirmed: ['r-1'] }),
    );
    ledger.recordEvent('pause', {});
    ledger.close();
  }

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'tributary-integrity-'));
    path = join(dir, 'ledger.sqlite');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('is intact before any attack', () => {
    filled();
    expect(messages()).toEqual([]);
  });

  it('catches a credit amount rewritten with the whole chain recomputed', () => {
    filled();
    rechain(path, (db) => db.prepare("UPDATE credits SET flops = 9e15 WHERE receipt_id = 'r-2'").run());
    expect(messages()).toEqual([
      'credits entry #4 (receipt r-2) credits 9000000000000000 FLOP but its signed receipt says 1500000000002',
      'entry #13 differs from the one the signed chain head recorded (it was replaced)',
    ]);
  });

  it('catches a confirmation the coordinator never sent', () => {
    filled();
    rechain(path, (db) =>
      db.prepare("UPDATE credits SET status = 'confirmed' WHERE receipt_id = 'r-4'").run(),
    );
    expect(messages()).toEqual([
      'credits entry #8 (receipt r-4) is confirmed but no coordinator statement says so',
      'entry #13 differs from the one the signed chain head recorded (it was replaced)',
    ]);
  });

  it("catches receipts deleted before the coordinator's statement", () => {
    filled();
    rechain(path, (db) => {
      db.prepare("DELETE FROM receipts WHERE receipt_id = 'r-5'").run();
      db.prepare("DELETE FROM credits WHERE receipt_id = 'r-5'").run();
    });
    expect(messages()).toContain(
      "the coordinator's statement #1 for run run-1 says it sent 5 receipts; the ledger holds 4 (receipts were deleted)",
    );
  });

  it('catches the newest entries deleted with the in-file head rewritten, by the signed head beside it', () => {
    filled();
    rechain(path, (db) => {
      db.prepare("DELETE FROM events WHERE kind = 'pause'").run();
      db.prepare('DELETE FROM statements').run();
    });
    expect(messages()).toEqual([
      'credits entry #11 (receipt r-1) is confirmed but no coordinator statement says so',
      'entries #12 to #13 are missing (deleted): the signed chain head records 13 entries, the ledger ends at #11',
    ]);
    expect(inspectLedger(path)).toMatchObject({ state: 'unusable' });
  });

  it('refuses a head file rewritten to match, because the node did not sign it', () => {
    filled();
    const head = JSON.parse(readFileSync(headPath(path), 'utf8')) as { seq: number };
    writeFileSync(headPath(path), JSON.stringify({ ...head, seq: 3 }));
    expect(messages()).toEqual([
      'the signed chain head beside the ledger is invalid: its signature does not verify (it was forged or edited)',
    ]);
  });

  it('reports an emptied or truncated ledger, and the agent will not start on one without being told', async () => {
    filled();
    const original = readFileSync(path);
    truncateSync(path, 0);
    expect(inspectLedger(path)).toEqual({ state: 'unusable', reason: 'the ledger file is empty (0 bytes)' });
    writeFileSync(path, original.subarray(0, 4096 + 100));
    expect(inspectLedger(path)).toMatchObject({ state: 'unusable', reason: /truncated/ });

    await expect(
      Agent.open({ dataDir: dir, tickMs: 0, pollHost: false, hostSensors: false }),
    ).rejects.toThrow(LedgerUnusable);
    expect(statSync(path).size).toBe(4196);
    const agent = await Agent.open({
      dataDir: dir,
      tickMs: 0,
      pollHost: false,
      hostSensors: false,
      freshLedger: true,
    });
    expect(agent.ledger.verify().ok).toBe(true);
    await agent.stop();
  });

  it('verifies without writing a byte to the ledger file', () => {
    filled();
    for (const suffix of ['-wal', '-shm']) rmSync(path + suffix, { force: true });
    const digest = (): string => createHash('sha256').update(readFileSync(path)).digest('hex');
    const before = { digest: digest(), mtime: statSync(path).mtimeMs };
    expect(messages()).toEqual([]);
    expect({ digest: digest(), mtime: statSync(path).mtimeMs }).toEqual(before);
    expect(existsSync(`${path}-wal`) ? statSync(`${path}-wal`).size : 0).toBe(0);
  });

  it.skipIf(process.platform === 'win32')(
    'keeps the ledger, its WAL and its head file to the owner (0600)',
    () => {
      const ledger = open();
      ledger.acceptReceipt(receipt(1));
      for (const file of [path, `${path}-wal`, headPath(path)])
        expect((statSync(file).mode & 0o777).toString(8)).toBe('600');
      ledger.close();
    },
  );
});
