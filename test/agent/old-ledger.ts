import Database from 'better-sqlite3';
import { rowHash, type RowValue } from '../../main/agent/ledger/chain.js';

/**
 * Takes a ledger back to schema 2, as versions before migrations 3 and 4 left it: an (empty) payouts table,
 * no receipt states, run or day totals. The chained rows are untouched.
 */
export function downgradeToSchema2(path: string): void {
  const raw = new Database(path);
  raw.exec(`
    DROP TRIGGER receipt_states_on_receipt; DROP TRIGGER receipt_states_on_credit;
    DROP TRIGGER receipt_states_on_statement; DROP TABLE receipt_states; DROP TABLE run_credit;
    DROP TABLE day_credit;
    CREATE TABLE payouts (
      seq INTEGER PRIMARY KEY, payout_id TEXT NOT NULL UNIQUE, flops REAL NOT NULL, address TEXT NOT NULL,
      reference TEXT NOT NULL, at TEXT NOT NULL, prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
    DELETE FROM migrations WHERE version > 2;`);
  raw.close();
}

/** Chains a payout row onto a schema-2 ledger, as the recordPayout of those versions did. */
export function appendPayout(path: string): void {
  const raw = new Database(path);
  const head = raw.prepare('SELECT seq, hash FROM chain_head WHERE id = 1').get() as {
    seq: number;
    hash: string;
  };
  const row: Record<string, RowValue> = {
    seq: head.seq + 1,
    payout_id: 'p-1',
    flops: 1e12,
    address: '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
    reference: 'tx1',
    at: '2026-11-20T14:00:00.000Z',
    prev_hash: head.hash,
  };
  const hash = rowHash('payouts', row);
  raw
    .prepare(
      'INSERT INTO payouts (seq, payout_id, flops, address, reference, at, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?, ?)',
    )
    .run(...Object.values(row), hash);
  raw.prepare('UPDATE chain_head SET seq = ?, hash = ? WHERE id = 1').run(row.seq, hash);
  raw.close();
}
