import Database from 'better-sqlite3';
import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import type { SignedCreditStatement } from '../shared/protocol/credit-statement.js';
import type { SignedReceipt } from '../shared/protocol/receipt.js';

export interface Progress {
  /** Global steps committed so far; the next step to run has this index. */
  step: number;
  tokens: number;
  loss: number | null;
}

export interface CheckpointRow {
  step: number;
  dir: string;
}

export interface Balance {
  nodeId: string;
  flops: number;
  units: number;
}

export interface StoredReceipt {
  seq: number;
  signed: SignedReceipt;
}

/**
 * The coordinator's durable state in SQLite (WAL): nodes, every receipt ever issued, balances, run progress
 * and the checkpoint index. A step's receipts, balances and progress are written in one transaction, so a
 * kill at any instant leaves either all of a step or none of it.
 */
export class CoordinatorStore {
  private readonly db: Database.Database;
  private readonly prepared = new Map<string, Database.Statement>();

  constructor(path: string) {
    // Only the operator's account reads balances and payout addresses; SQLite gives -wal/-shm the same mode.
    if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
    if (process.platform !== 'win32') chmodSync(path, 0o600);
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = FULL');
    this.db.exec(`
      CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS nodes (node_id TEXT PRIMARY KEY, engine TEXT, first_seen TEXT NOT NULL, last_seen TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS receipts (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        receipt_id TEXT NOT NULL UNIQUE,
        node_id TEXT NOT NULL,
        step INTEGER NOT NULL,
        stage INTEGER NOT NULL,
        micro_batch INTEGER NOT NULL,
        tokens INTEGER NOT NULL,
        flops REAL NOT NULL,
        signed TEXT NOT NULL
      );
      CREATE INDEX IF NOT EXISTS receipts_node ON receipts (node_id, seq);
      CREATE TABLE IF NOT EXISTS balances (node_id TEXT PRIMARY KEY, flops REAL NOT NULL, units INTEGER NOT NULL);
      CREATE TABLE IF NOT EXISTS steps (step INTEGER PRIMARY KEY, loss REAL NOT NULL, tokens INTEGER NOT NULL, finished_at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS checkpoints (step INTEGER PRIMARY KEY, dir TEXT NOT NULL, created_at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS statements (
        node_id TEXT NOT NULL, seq INTEGER NOT NULL, through_receipt INTEGER NOT NULL, signed TEXT NOT NULL,
        PRIMARY KEY (node_id, seq));
      CREATE TABLE IF NOT EXISTS payout_addresses (node_id TEXT PRIMARY KEY, address TEXT NOT NULL, at TEXT NOT NULL);
      CREATE TABLE IF NOT EXISTS validation_losses (step INTEGER PRIMARY KEY, loss REAL NOT NULL, measured_at TEXT NOT NULL);
    `);
    this.addVerificationColumns();
  }

  /**
   * Verification of work (coordinator/verification.ts): each receipt is 'unverified', 'verified' (a second
   * replica agreed) or 'revoked' (its node was later proven wrong); a revocation waits with its reason until
   * a statement (`revoked_in`) carries it. Databases from before verification gain the columns.
   */
  private addVerificationColumns(): void {
    const columns = this.db.prepare('PRAGMA table_info(receipts)').all() as Array<{ name: string }>;
    if (columns.some((c) => c.name === 'verification')) return;
    this.db.exec(`
      ALTER TABLE receipts ADD COLUMN verification TEXT NOT NULL DEFAULT 'unverified';
      ALTER TABLE receipts ADD COLUMN revoke_reason TEXT;
      ALTER TABLE receipts ADD COLUMN revoked_in INTEGER;
    `);
  }

  /**
   * Prepared statements by their text: preparing one costs more than running it, and a step runs the same few
   * statements for every node it credits.
   */
  private sql(text: string): Database.Statement {
    let statement = this.prepared.get(text);
    if (!statement) {
      statement = this.db.prepare(text);
      this.prepared.set(text, statement);
    }
    return statement;
  }

  /** Binds the database to one run; a database of another run is refused rather than mixed. */
  claimRun(runId: string): void {
    const row = this.sql('SELECT value FROM meta WHERE key = ?').get('runId') as
      { value: string } | undefined;
    if (row && row.value !== runId) throw new Error(`database belongs to run "${row.value}", not "${runId}"`);
    if (!row) this.sql('INSERT INTO meta (key, value) VALUES (?, ?)').run('runId', runId);
  }

  progress(): Progress {
    const last = this.sql('SELECT step, loss FROM steps ORDER BY step DESC LIMIT 1').get() as
      { step: number; loss: number } | undefined;
    const tokens = (this.sql('SELECT COALESCE(SUM(tokens), 0) AS t FROM steps').get() as { t: number }).t;
    return { step: last ? last.step + 1 : 0, tokens, loss: last?.loss ?? null };
  }

  losses(): Array<{ step: number; loss: number }> {
    return this.sql('SELECT step, loss FROM steps ORDER BY step').all() as Array<{
      step: number;
      loss: number;
    }>;
  }

  touchNode(nodeId: string, engine: string): void {
    const now = new Date().toISOString();
    this.sql(
      'INSERT INTO nodes (node_id, engine, first_seen, last_seen) VALUES (?, ?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET engine = excluded.engine, last_seen = excluded.last_seen',
    ).run(nodeId, engine, now, now);
  }

  /**
   * Records a finished step with its receipts. A receipt whose id was issued before (a step redone after a
   * rollback) is skipped and credits nothing, so no unit of work is counted twice. Returns the new receipts.
   */
  commitStep(
    step: number,
    loss: number,
    tokens: number,
    receipts: SignedReceipt[],
    verified: ReadonlySet<string> = new Set(),
  ): StoredReceipt[] {
    return this.atomically(() => {
      const stored = this.insertReceipts(receipts, verified);
      this.sql('INSERT OR REPLACE INTO steps (step, loss, tokens, finished_at) VALUES (?, ?, ?, ?)').run(
        step,
        loss,
        tokens,
        new Date().toISOString(),
      );
      return stored;
    });
  }

  /** Records and credits receipts of work outside a step (the held-out validation), with the same rules. */
  creditReceipts(receipts: SignedReceipt[]): StoredReceipt[] {
    return this.atomically(() => this.insertReceipts(receipts));
  }

  /** `verified`: ids of receipts whose work a second replica recomputed and agreed with. */
  private insertReceipts(
    receipts: SignedReceipt[],
    verified: ReadonlySet<string> = new Set(),
  ): StoredReceipt[] {
    const insertReceipt = this.sql(
      'INSERT OR IGNORE INTO receipts (receipt_id, node_id, step, stage, micro_batch, tokens, flops, signed, verification) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const credit = this.sql(
      'INSERT INTO balances (node_id, flops, units) VALUES (?, ?, 1) ON CONFLICT(node_id) DO UPDATE SET flops = flops + excluded.flops, units = units + 1',
    );
    const stored: StoredReceipt[] = [];
    for (const signed of receipts) {
      const r = signed.receipt;
      const info = insertReceipt.run(
        r.receiptId,
        r.nodeId,
        r.step,
        r.stage,
        r.microBatch,
        r.tokens,
        r.flops,
        JSON.stringify(signed),
        verified.has(r.receiptId) ? 'verified' : 'unverified',
      );
      if (info.changes === 0) continue;
      credit.run(r.nodeId, r.flops);
      stored.push({ seq: Number(info.lastInsertRowid), signed });
    }
    return stored;
  }

  /**
   * A node was proven wrong: every receipt of it after its newest verified one is revoked and its balance
   * loses their credit; the next statement to the node carries the revocations. Returns how many.
   */
  revokeUnverified(nodeId: string, reason: string): number {
    return this.atomically(() => {
      const after = this.sql(
        "SELECT COALESCE(MAX(seq), 0) AS seq FROM receipts WHERE node_id = ? AND verification = 'verified'",
      ).get(nodeId) as { seq: number };
      const lost = this.sql(
        "SELECT COUNT(*) AS n, COALESCE(SUM(flops), 0) AS flops FROM receipts WHERE node_id = ? AND seq > ? AND verification = 'unverified'",
      ).get(nodeId, after.seq) as { n: number; flops: number };
      if (lost.n === 0) return 0;
      this.sql(
        "UPDATE receipts SET verification = 'revoked', revoke_reason = ? WHERE node_id = ? AND seq > ? AND verification = 'unverified'",
      ).run(reason.slice(0, 200), nodeId, after.seq);
      this.sql(
        'UPDATE balances SET flops = MAX(flops - ?, 0), units = MAX(units - ?, 0) WHERE node_id = ?',
      ).run(lost.flops, lost.n, nodeId);
      return lost.n;
    });
  }

  /** Each receipt's verification state, for reports and tests. */
  receiptStates(nodeId: string): Array<{ receiptId: string; verification: string }> {
    return this.sql(
      'SELECT receipt_id AS receiptId, verification FROM receipts WHERE node_id = ? ORDER BY seq',
    ).all(nodeId) as Array<{ receiptId: string; verification: string }>;
  }

  receiptsSince(nodeId: string, afterSeq: number): StoredReceipt[] {
    const rows = this.sql('SELECT seq, signed FROM receipts WHERE node_id = ? AND seq > ? ORDER BY seq').all(
      nodeId,
      afterSeq,
    ) as Array<{ seq: number; signed: string }>;
    return rows.map((row) => ({ seq: row.seq, signed: JSON.parse(row.signed) as SignedReceipt }));
  }

  /**
   * What the node's next credit statement says: its number, the receipts issued since the last statement
   * (at most `limit`, oldest first) and the running totals through the newest of them. Null when nothing new.
   */
  nextStatement(
    nodeId: string,
    limit: number,
  ): {
    seq: number;
    throughReceipt: number;
    receiptIds: string[];
    verifiedIds: string[];
    revoked: Array<{ receiptId: string; reason: string }>;
    receipts: number;
    confirmedFlops: number;
    revokedFlops: number;
  } | null {
    const last = this.sql(
      'SELECT seq, through_receipt AS through FROM statements WHERE node_id = ? ORDER BY seq DESC LIMIT 1',
    ).get(nodeId) as { seq: number; through: number } | undefined;
    const fresh = this.sql(
      'SELECT seq, receipt_id AS id, verification FROM receipts WHERE node_id = ? AND seq > ? ORDER BY seq LIMIT ?',
    ).all(nodeId, last?.through ?? 0, limit) as Array<{ seq: number; id: string; verification: string }>;
    const revoked = this.sql(
      "SELECT receipt_id AS receiptId, revoke_reason AS reason FROM receipts WHERE node_id = ? AND verification = 'revoked' AND revoked_in IS NULL ORDER BY seq LIMIT ?",
    ).all(nodeId, limit) as Array<{ receiptId: string; reason: string }>;
    if (fresh.length === 0 && revoked.length === 0) return null;
    const throughReceipt = fresh.at(-1)?.seq ?? last!.through;
    const totals = this.sql(
      "SELECT COUNT(*) AS n, COALESCE(SUM(CASE WHEN verification = 'revoked' THEN 0 ELSE flops END), 0) AS flops, COALESCE(SUM(CASE WHEN verification = 'revoked' THEN flops ELSE 0 END), 0) AS revoked FROM receipts WHERE node_id = ? AND seq <= ?",
    ).get(nodeId, throughReceipt) as { n: number; flops: number; revoked: number };
    const revokedIds = new Set(revoked.map((r) => r.receiptId));
    return {
      seq: (last?.seq ?? 0) + 1,
      throughReceipt,
      receiptIds: fresh.map((r) => r.id).filter((id) => !revokedIds.has(id)),
      verifiedIds: fresh.filter((r) => r.verification === 'verified').map((r) => r.id),
      revoked,
      receipts: totals.n,
      confirmedFlops: totals.flops,
      revokedFlops: totals.revoked,
    };
  }

  /** Stores a statement and marks the revocations it carries, together (one commit, one sync to disk). */
  addStatement(nodeId: string, seq: number, throughReceipt: number, signed: SignedCreditStatement): void {
    this.atomically(() => {
      this.sql('INSERT INTO statements (node_id, seq, through_receipt, signed) VALUES (?, ?, ?, ?)').run(
        nodeId,
        seq,
        throughReceipt,
        JSON.stringify(signed),
      );
      const carried = this.sql('UPDATE receipts SET revoked_in = ? WHERE receipt_id = ?');
      for (const { receiptId } of signed.statement.revoked) carried.run(seq, receiptId);
    });
  }

  /**
   * Runs `work` as one transaction: all of its writes or none, and one sync to disk for all of them (with
   * `synchronous = FULL` each commit waits for the disk). Nested calls join the outer transaction.
   */
  atomically<T>(work: () => T): T {
    return this.db.transaction(work)();
  }

  statementsSince(nodeId: string, afterSeq: number): SignedCreditStatement[] {
    const rows = this.sql('SELECT signed FROM statements WHERE node_id = ? AND seq > ? ORDER BY seq').all(
      nodeId,
      afterSeq,
    ) as Array<{ signed: string }>;
    return rows.map((row) => JSON.parse(row.signed) as SignedCreditStatement);
  }

  setPayoutAddress(nodeId: string, address: string): void {
    this.sql(
      'INSERT INTO payout_addresses (node_id, address, at) VALUES (?, ?, ?) ON CONFLICT(node_id) DO UPDATE SET address = excluded.address, at = excluded.at',
    ).run(nodeId, address, new Date().toISOString());
  }

  payoutAddress(nodeId: string): string | null {
    const row = this.sql('SELECT address FROM payout_addresses WHERE node_id = ?').get(nodeId) as
      { address: string } | undefined;
    return row?.address ?? null;
  }

  balances(): Balance[] {
    return this.sql(
      'SELECT node_id AS nodeId, flops, units FROM balances ORDER BY node_id',
    ).all() as Balance[];
  }

  receiptCount(): number {
    return (this.sql('SELECT COUNT(*) AS n FROM receipts').get() as { n: number }).n;
  }

  addCheckpoint(step: number, dir: string): void {
    this.sql('INSERT OR REPLACE INTO checkpoints (step, dir, created_at) VALUES (?, ?, ?)').run(
      step,
      dir,
      new Date().toISOString(),
    );
  }

  latestCheckpoint(): CheckpointRow | null {
    return (
      (this.sql('SELECT step, dir FROM checkpoints ORDER BY step DESC LIMIT 1').get() as
        CheckpointRow | undefined) ?? null
    );
  }

  /** Forgets steps after a rollback point, so progress and the loss curve match the weights again. */
  truncateSteps(fromStep: number): void {
    this.sql('DELETE FROM steps WHERE step >= ?').run(fromStep);
    // An evaluation after a step that is redone measured weights that no longer exist.
    this.sql('DELETE FROM validation_losses WHERE step > ?').run(fromStep);
  }

  /** A held-out validation loss, by the number of steps trained when it was measured (a redo replaces it). */
  addValidationLoss(step: number, loss: number): void {
    this.sql('INSERT OR REPLACE INTO validation_losses (step, loss, measured_at) VALUES (?, ?, ?)').run(
      step,
      loss,
      new Date().toISOString(),
    );
  }

  validationLosses(): Array<{ step: number; loss: number }> {
    return this.sql('SELECT step, loss FROM validation_losses ORDER BY step').all() as Array<{
      step: number;
      loss: number;
    }>;
  }

  /**
   * The training losses (`/api/losses`), each with the held-out loss measured right after its step where
   * there was one: the dashboard's points, where a step index is one less than the steps trained.
   */
  lossCurve(): Array<{ step: number; loss: number; validation?: number }> {
    const rows = this.sql(
      'SELECT s.step, s.loss, v.loss AS validation FROM steps s LEFT JOIN validation_losses v ON v.step = s.step + 1 ORDER BY s.step',
    ).all() as Array<{ step: number; loss: number; validation: number | null }>;
    return rows.map(({ step, loss, validation }) =>
      validation === null ? { step, loss } : { step, loss, validation },
    );
  }

  close(): void {
    this.db.close();
  }
}
