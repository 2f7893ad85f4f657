import type Database from 'better-sqlite3';

/**
 * Every chained table carries `seq` (one sequence across all tables, 1, 2, 3, ...), `prev_hash` and `hash`.
 * Rows are only ever appended: a credit that changes state gets a new credits row.
 */
export const CHAINED_TABLES = [
  'work_units',
  'receipts',
  'credits',
  'payouts',
  'events',
  'statements',
] as const;
export type ChainedTable = (typeof CHAINED_TABLES)[number];

const MIGRATIONS: string[] = [
  `
  CREATE TABLE chain_head (id INTEGER PRIMARY KEY CHECK (id = 1), seq INTEGER NOT NULL, hash TEXT NOT NULL);
  CREATE TABLE work_units (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, run_id TEXT NOT NULL, stage INTEGER NOT NULL, step INTEGER NOT NULL,
    micro_batch INTEGER NOT NULL, tokens INTEGER NOT NULL, busy_ms REAL NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
  CREATE TABLE receipts (
    seq INTEGER PRIMARY KEY, receipt_id TEXT NOT NULL UNIQUE, run_id TEXT NOT NULL, node_id TEXT NOT NULL,
    stage INTEGER NOT NULL, step INTEGER NOT NULL, micro_batch INTEGER NOT NULL, tokens INTEGER NOT NULL,
    flops REAL NOT NULL, issued_at TEXT NOT NULL, signature TEXT NOT NULL, coordinator_key TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
  CREATE TABLE credits (
    seq INTEGER PRIMARY KEY, receipt_id TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending', 'confirmed', 'revoked')),
    flops REAL NOT NULL, at TEXT NOT NULL, note TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
  CREATE INDEX credits_by_receipt ON credits (receipt_id, seq);
  CREATE TABLE payouts (
    seq INTEGER PRIMARY KEY, payout_id TEXT NOT NULL UNIQUE, flops REAL NOT NULL, address TEXT NOT NULL,
    reference TEXT NOT NULL, at TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
  CREATE TABLE events (
    seq INTEGER PRIMARY KEY, at TEXT NOT NULL, kind TEXT NOT NULL, detail TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL);
  CREATE INDEX events_by_kind ON events (kind, seq);
  `,
  // The coordinator's signed credit statements: what moved credits from pending to confirmed or revoked.
  `
  CREATE TABLE statements (
    seq INTEGER PRIMARY KEY, run_id TEXT NOT NULL, statement_seq INTEGER NOT NULL, body TEXT NOT NULL,
    signature TEXT NOT NULL, coordinator_key TEXT NOT NULL, at TEXT NOT NULL,
    prev_hash TEXT NOT NULL, hash TEXT NOT NULL,
    UNIQUE (coordinator_key, run_id, statement_seq));
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

export function migrate(db: Database.Database): void {
  db.exec('CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)');
  const current =
    (db.prepare('SELECT MAX(version) AS v FROM migrations').get() as { v: number | null }).v ?? 0;
  if (current > MIGRATIONS.length) {
    throw new Error(
      `This ledger was written by a newer Tributary (schema ${current}; this version knows ${MIGRATIONS.length}). ` +
        'Update Tributary; the ledger was left untouched.',
    );
  }
  const apply = db.transaction(() => {
    MIGRATIONS.slice(current).forEach((sql, i) => {
      db.exec(sql);
      db.prepare('INSERT INTO migrations (version, applied_at) VALUES (?, ?)').run(
        current + i + 1,
        new Date().toISOString(),
      );
    });
  });
  apply.immediate();
}
