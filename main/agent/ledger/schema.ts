import type Database from 'better-sqlite3';

/**
 * Every chained table carries `seq` (one sequence across all tables, 1, 2, 3, ...), `prev_hash` and `hash`.
 * Rows are only ever appended: a credit that changes state gets a new credits row.
 */
export const CHAINED_TABLES = ['work_units', 'receipts', 'credits', 'events', 'statements'] as const;
/**
 * Chained tables nothing writes any more, which an older ledger may still hold rows in; verify walks them
 * like the others. `payouts`: nothing ever paid out, so migration 3 drops it wherever it is empty.
 */
export const RETIRED_TABLES = ['payouts'] as const;
export type WritableTable = (typeof CHAINED_TABLES)[number];
export type ChainedTable = WritableTable | (typeof RETIRED_TABLES)[number];

/** The receipt ids some stored statement says a second replica verified (the ledger's whole history). */
export const STATED_VERIFIED = `
  SELECT DISTINCT j.value AS receipt_id FROM statements s, json_each(s.body, '$.verified') j`;

type Migration = string | ((db: Database.Database) => void);

const MIGRATIONS: Migration[] = [
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
  // Nothing pays out (there is no payout code), so a ledger's payouts table is empty and goes; one with rows,
  // written by a development build, keeps them so its chain still verifies.
  (db) => {
    const empty = db.prepare('SELECT 1 FROM payouts LIMIT 1').get() === undefined;
    if (empty) db.exec('DROP TABLE payouts');
  },
  // Each receipt's state as the ledger and the coordinator's statements give it, each run's totals and each
  // day's earnings, kept up to date by triggers on the chained tables in the same transaction as the row, so
  // reconciling after a statement and the wallet read a few rows and index entries instead of every statement
  // and receipt. Derived: verify recomputes them.
  `
  CREATE TABLE receipt_states (
    receipt_id TEXT PRIMARY KEY,
    -- the receipt's chain seq; null while only a statement names it
    receipt_seq INTEGER,
    -- its newest local credit state: pending, confirmed, revoked; null while the ledger does not hold it
    status TEXT,
    -- what the statements say together: confirmed by one and revoked by none, revoked by any, or null
    stated TEXT,
    -- where a statement first confirmed it: the statement's chain seq * 4096 + its index in the list
    first_confirmed INTEGER,
    -- a statement said a second replica recomputed the work and agreed
    verified INTEGER NOT NULL DEFAULT 0);
  CREATE INDEX receipt_states_missing_locally ON receipt_states (first_confirmed)
    WHERE stated = 'confirmed' AND status IS NOT 'confirmed';
  CREATE INDEX receipt_states_missing_from_statement ON receipt_states (receipt_seq)
    WHERE status = 'confirmed' AND stated IS NOT 'confirmed';
  CREATE TABLE run_credit (
    coordinator_key TEXT NOT NULL, run_id TEXT NOT NULL,
    -- the run's credit in this ledger by its newest state, FLOP
    confirmed_flops REAL NOT NULL DEFAULT 0,
    pending_flops REAL NOT NULL DEFAULT 0,
    revoked_flops REAL NOT NULL DEFAULT 0,
    -- what the run's newest statement says is confirmed; null before its first statement
    statement_flops REAL,
    PRIMARY KEY (coordinator_key, run_id));
  -- credit not revoked, by UTC day of issue
  CREATE TABLE day_credit (
    day TEXT PRIMARY KEY, receipts INTEGER NOT NULL DEFAULT 0, flops REAL NOT NULL DEFAULT 0);

  INSERT INTO receipt_states (receipt_id, receipt_seq, status)
    SELECT r.receipt_id, r.seq,
           (SELECT c.status FROM credits c WHERE c.receipt_id = r.receipt_id ORDER BY c.seq DESC LIMIT 1)
    FROM receipts r;
  INSERT INTO receipt_states (receipt_id, stated, first_confirmed)
    SELECT j.value, 'confirmed', MIN(s.seq * 4096 + j.key) FROM statements s, json_each(s.body, '$.confirmed') j
    GROUP BY j.value
    ON CONFLICT (receipt_id) DO UPDATE SET stated = excluded.stated, first_confirmed = excluded.first_confirmed;
  INSERT INTO receipt_states (receipt_id, stated)
    SELECT DISTINCT json_extract(j.value, '$.receiptId'), 'revoked' FROM statements s, json_each(s.body, '$.revoked') j
    WHERE true
    ON CONFLICT (receipt_id) DO UPDATE SET stated = 'revoked';
  INSERT INTO receipt_states (receipt_id, verified)
    SELECT receipt_id, 1 FROM (${STATED_VERIFIED}) WHERE true
    ON CONFLICT (receipt_id) DO UPDATE SET verified = 1;
  INSERT INTO run_credit (coordinator_key, run_id, confirmed_flops, pending_flops, revoked_flops)
    SELECT r.coordinator_key, r.run_id, TOTAL(iif(rs.status = 'confirmed', r.flops, 0)),
           TOTAL(iif(rs.status = 'pending', r.flops, 0)), TOTAL(iif(rs.status = 'revoked', r.flops, 0))
    FROM receipts r JOIN receipt_states rs ON rs.receipt_id = r.receipt_id
    GROUP BY r.coordinator_key, r.run_id;
  INSERT INTO day_credit (day, receipts, flops)
    SELECT substr(r.issued_at, 1, 10), COUNT(*), TOTAL(r.flops)
    FROM receipts r JOIN receipt_states rs ON rs.receipt_id = r.receipt_id
    WHERE rs.status IN ('pending', 'confirmed') GROUP BY 1;
  INSERT INTO run_credit (coordinator_key, run_id, statement_flops)
    SELECT s.coordinator_key, s.run_id, json_extract(s.body, '$.confirmedFlops') FROM statements s
    WHERE s.seq = (SELECT MAX(seq) FROM statements WHERE coordinator_key = s.coordinator_key AND run_id = s.run_id)
    ON CONFLICT (coordinator_key, run_id) DO UPDATE SET statement_flops = excluded.statement_flops;

  CREATE TRIGGER receipt_states_on_receipt AFTER INSERT ON receipts BEGIN
    INSERT INTO receipt_states (receipt_id, receipt_seq) VALUES (NEW.receipt_id, NEW.seq)
      ON CONFLICT (receipt_id) DO UPDATE SET receipt_seq = excluded.receipt_seq;
    INSERT INTO run_credit (coordinator_key, run_id) VALUES (NEW.coordinator_key, NEW.run_id)
      ON CONFLICT DO NOTHING;
  END;
  -- The credit moves from the receipt's previous state (null for its first credit) to NEW.status.
  CREATE TRIGGER receipt_states_on_credit AFTER INSERT ON credits BEGIN
    UPDATE run_credit SET
        confirmed_flops = confirmed_flops + iif(NEW.status = 'confirmed', NEW.flops, 0)
          - (SELECT iif(status IS 'confirmed', NEW.flops, 0) FROM receipt_states WHERE receipt_id = NEW.receipt_id),
        pending_flops = pending_flops + iif(NEW.status = 'pending', NEW.flops, 0)
          - (SELECT iif(status IS 'pending', NEW.flops, 0) FROM receipt_states WHERE receipt_id = NEW.receipt_id),
        revoked_flops = revoked_flops + iif(NEW.status = 'revoked', NEW.flops, 0)
          - (SELECT iif(status IS 'revoked', NEW.flops, 0) FROM receipt_states WHERE receipt_id = NEW.receipt_id)
      WHERE (coordinator_key, run_id) = (SELECT coordinator_key, run_id FROM receipts WHERE receipt_id = NEW.receipt_id);
    INSERT INTO day_credit (day, receipts, flops)
      SELECT substr(r.issued_at, 1, 10), d.counted, d.counted * NEW.flops
      FROM receipts r,
           (SELECT (NEW.status IS NOT 'revoked') - (status IS 'pending' OR status IS 'confirmed') AS counted
            FROM receipt_states WHERE receipt_id = NEW.receipt_id) d
      WHERE r.receipt_id = NEW.receipt_id
      ON CONFLICT (day) DO UPDATE SET receipts = receipts + excluded.receipts, flops = flops + excluded.flops;
    UPDATE receipt_states SET status = NEW.status WHERE receipt_id = NEW.receipt_id;
  END;
  CREATE TRIGGER receipt_states_on_statement AFTER INSERT ON statements BEGIN
    INSERT INTO receipt_states (receipt_id, stated, first_confirmed)
      SELECT value, 'confirmed', NEW.seq * 4096 + key FROM json_each(NEW.body, '$.confirmed') WHERE true
      ON CONFLICT (receipt_id) DO UPDATE SET stated = coalesce(stated, 'confirmed'),
        first_confirmed = coalesce(first_confirmed, excluded.first_confirmed);
    INSERT INTO receipt_states (receipt_id, stated)
      SELECT json_extract(value, '$.receiptId'), 'revoked' FROM json_each(NEW.body, '$.revoked') WHERE true
      ON CONFLICT (receipt_id) DO UPDATE SET stated = 'revoked';
    INSERT INTO receipt_states (receipt_id, verified)
      SELECT value, 1 FROM json_each(NEW.body, '$.verified') WHERE true
      ON CONFLICT (receipt_id) DO UPDATE SET verified = 1;
    INSERT INTO run_credit (coordinator_key, run_id, statement_flops)
      VALUES (NEW.coordinator_key, NEW.run_id, json_extract(NEW.body, '$.confirmedFlops'))
      ON CONFLICT (coordinator_key, run_id) DO UPDATE SET statement_flops = excluded.statement_flops;
  END;
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
    MIGRATIONS.slice(current).forEach((migration, i) => {
      if (typeof migration === 'string') db.exec(migration);
      else migration(db);
      db.prepare('INSERT INTO migrations (version, applied_at) VALUES (?, ?)').run(
        current + i + 1,
        new Date().toISOString(),
      );
    });
  });
  apply.immediate();
}
