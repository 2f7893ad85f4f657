import Database from 'better-sqlite3';
import type { ReceiptRow, ReceiptStatus, WalletSnapshot } from '../../../shared/dashboard/contract.js';
import {
  signedReceiptSchema,
  type SignedReceipt,
  type WorkReceipt,
} from '../../../shared/protocol/receipt.js';
import { GENESIS_HASH, rowHash, type RowValue } from './chain.js';
import { toCsv } from './csv.js';
import { CHAINED_TABLES, migrate, type ChainedTable } from './schema.js';
import { receiptSignatureValid } from './verify-receipt.js';

export interface LedgerOptions {
  /** Coordinator public keys (hex) whose receipts are accepted; empty accepts any validly signed receipt. */
  trustedCoordinatorKeys?: readonly string[];
  /** This node's public key (hex); receipts for another node are refused. */
  nodeId?: string;
  now?: () => number;
}

export class ReceiptRejected extends Error {}

export interface WorkUnit {
  runId: string;
  stage: number;
  step: number;
  microBatch: number;
  tokens: number;
  busyMs: number;
}

export interface LedgerProblem {
  seq: number;
  table: ChainedTable | null;
  message: string;
}

export interface VerifyResult {
  ok: boolean;
  entries: number;
  problems: LedgerProblem[];
}

export interface Balance {
  confirmedFlops: number;
  pendingFlops: number;
  revokedFlops: number;
  paidOutFlops: number;
}

export const EXPORT_TABLES = ['receipts', 'credits', 'payouts', 'work_units', 'events'] as const;
export type ExportTable = (typeof EXPORT_TABLES)[number];

type Row = Record<string, RowValue>;

/**
 * The contributor's tamper-evident record: an append-only SQLite file (WAL, fsync on every commit) whose
 * rows form one hash chain across all tables. Each append is one transaction, so a kill at any instant
 * leaves either the whole row and the new chain head, or neither.
 */
export class Ledger {
  readonly db: Database.Database;
  private readonly now: () => number;
  /** Bumped on every append by this process, so readers can cache derived views. */
  revision = 0;
  private readonly statements = new Map<string, Database.Statement>();

  constructor(
    readonly path: string,
    private readonly options: LedgerOptions = {},
  ) {
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // WAL + NORMAL: a killed process never loses or tears a commit; only a power cut can roll back the
    // last few (never corrupt them), and those receipts show up again when reconciling with the coordinator.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    this.now = options.now ?? Date.now;
  }

  close(): void {
    this.db.close();
  }

  private iso(): string {
    return new Date(this.now()).toISOString();
  }

  /** Appends one row to the chain. Callers wrap several appends in one transaction where they belong together. */
  private statement(sql: string): Database.Statement {
    let stmt = this.statements.get(sql);
    if (!stmt) {
      stmt = this.db.prepare(sql);
      this.statements.set(sql, stmt);
    }
    return stmt;
  }

  private append(table: ChainedTable, content: Row): number {
    const head = this.statement('SELECT seq, hash FROM chain_head WHERE id = 1').get() as
      { seq: number; hash: string } | undefined;
    const seq = (head?.seq ?? 0) + 1;
    const row: Row = { seq, ...content, prev_hash: head?.hash ?? GENESIS_HASH };
    const hash = rowHash(table, row);
    const columns = [...Object.keys(row), 'hash'];
    this.statement(
      `INSERT INTO ${table} (${columns.join(', ')}) VALUES (${columns.map(() => '?').join(', ')})`,
    ).run(...Object.values(row), hash);
    this.statement(
      'INSERT INTO chain_head (id, seq, hash) VALUES (1, ?, ?) ON CONFLICT (id) DO UPDATE SET seq = ?, hash = ?',
    ).run(seq, hash, seq, hash);
    this.revision++;
    return seq;
  }

  private inTransaction<T>(fn: () => T): T {
    return this.db.transaction(fn).immediate();
  }

  recordWorkUnit(unit: WorkUnit): number {
    return this.inTransaction(() =>
      this.append('work_units', {
        at: this.iso(),
        run_id: unit.runId,
        stage: unit.stage,
        step: unit.step,
        micro_batch: unit.microBatch,
        tokens: unit.tokens,
        busy_ms: unit.busyMs,
      }),
    );
  }

  recordEvent(kind: string, detail: Record<string, unknown> = {}): number {
    return this.inTransaction(() =>
      this.append('events', { at: this.iso(), kind, detail: JSON.stringify(detail) }),
    );
  }

  /**
   * Stores a receipt after checking its shape, its signer and its ed25519 signature; its credit starts
   * pending. A receipt already stored is a no-op ('duplicate'). Anything else throws ReceiptRejected.
   */
  acceptReceipt(input: unknown): 'stored' | 'duplicate' {
    const parsed = signedReceiptSchema.safeParse(input);
    if (!parsed.success)
      throw new ReceiptRejected(`malformed receipt: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const signed = parsed.data;
    const trusted = this.options.trustedCoordinatorKeys ?? [];
    if (trusted.length > 0 && !trusted.includes(signed.coordinatorKey)) {
      throw new ReceiptRejected(
        `receipt ${signed.receipt.receiptId} is signed by an unknown coordinator key`,
      );
    }
    if (this.options.nodeId !== undefined && signed.receipt.nodeId !== this.options.nodeId) {
      throw new ReceiptRejected(`receipt ${signed.receipt.receiptId} was issued to another node`);
    }
    if (!receiptSignatureValid(signed)) {
      throw new ReceiptRejected(`receipt ${signed.receipt.receiptId} has a signature that does not verify`);
    }
    return this.inTransaction(() => {
      const exists = this.statement('SELECT 1 FROM receipts WHERE receipt_id = ?').get(
        signed.receipt.receiptId,
      );
      if (exists) return 'duplicate';
      const r = signed.receipt;
      this.append('receipts', {
        receipt_id: r.receiptId,
        run_id: r.runId,
        node_id: r.nodeId,
        stage: r.stage,
        step: r.step,
        micro_batch: r.microBatch,
        tokens: r.tokens,
        flops: r.flops,
        issued_at: r.issuedAt,
        signature: signed.signature,
        coordinator_key: signed.coordinatorKey,
      });
      this.append('credits', {
        receipt_id: r.receiptId,
        status: 'pending',
        flops: r.flops,
        at: this.iso(),
        note: '',
      });
      return 'stored';
    });
  }

  /** The coordinator verified the work: pending -> confirmed. */
  confirmCredit(receiptId: string, note = ''): void {
    this.changeCredit(receiptId, 'confirmed', note, ['pending']);
  }

  /** The coordinator found the work wrong: pending or confirmed -> revoked (final). */
  revokeCredit(receiptId: string, note: string): void {
    this.changeCredit(receiptId, 'revoked', note, ['pending', 'confirmed']);
  }

  private changeCredit(receiptId: string, status: ReceiptStatus, note: string, from: ReceiptStatus[]): void {
    this.inTransaction(() => {
      const current = this.creditStatus(receiptId);
      if (current === null) throw new Error(`no receipt ${receiptId} in the ledger`);
      if (current.status === status) return;
      if (!from.includes(current.status))
        throw new Error(`receipt ${receiptId} is ${current.status}; cannot become ${status}`);
      this.append('credits', { receipt_id: receiptId, status, flops: current.flops, at: this.iso(), note });
    });
  }

  creditStatus(receiptId: string): { status: ReceiptStatus; flops: number } | null {
    const row = this.db
      .prepare('SELECT status, flops FROM credits WHERE receipt_id = ? ORDER BY seq DESC LIMIT 1')
      .get(receiptId) as { status: ReceiptStatus; flops: number } | undefined;
    return row ?? null;
  }

  recordPayout(payout: { payoutId: string; flops: number; address: string; reference: string }): void {
    this.inTransaction(() =>
      this.append('payouts', {
        payout_id: payout.payoutId,
        flops: payout.flops,
        address: payout.address,
        reference: payout.reference,
        at: this.iso(),
      }),
    );
  }

  /** The payout address the user set last (kept as a chained event, so a swapped address shows). */
  payoutAddress(): string | null {
    const row = this.db
      .prepare("SELECT detail FROM events WHERE kind = 'payout-address' ORDER BY seq DESC LIMIT 1")
      .get() as { detail: string } | undefined;
    return row ? (JSON.parse(row.detail) as { address: string }).address : null;
  }

  setPayoutAddress(address: string): void {
    this.recordEvent('payout-address', { address });
  }

  private static readonly LATEST_CREDITS = `
    SELECT c.receipt_id, c.status, c.flops FROM credits c
    WHERE c.seq = (SELECT MAX(seq) FROM credits WHERE receipt_id = c.receipt_id)`;

  balance(): Balance {
    const sums = this.db
      .prepare(`SELECT status, SUM(flops) AS flops FROM (${Ledger.LATEST_CREDITS}) GROUP BY status`)
      .all() as { status: ReceiptStatus; flops: number }[];
    const of = (s: ReceiptStatus): number => sums.find((r) => r.status === s)?.flops ?? 0;
    const paid =
      (this.db.prepare('SELECT SUM(flops) AS f FROM payouts').get() as { f: number | null }).f ?? 0;
    return {
      confirmedFlops: of('confirmed'),
      pendingFlops: of('pending'),
      revokedFlops: of('revoked'),
      paidOutFlops: paid,
    };
  }

  /** Receipts with their current credit state, newest first. */
  receipts(limit = 1_000_000): ReceiptRow[] {
    const rows = this.db
      .prepare(
        `SELECT r.receipt_id, r.run_id, r.issued_at, r.stage, r.step, r.tokens, r.flops, l.status
         FROM receipts r JOIN (${Ledger.LATEST_CREDITS}) l ON l.receipt_id = r.receipt_id
         ORDER BY r.seq DESC LIMIT ?`,
      )
      .all(limit) as Row[];
    return rows.map((r) => ({
      receiptId: String(r.receipt_id),
      runId: String(r.run_id),
      issuedAt: String(r.issued_at),
      stage: Number(r.stage),
      step: Number(r.step),
      tokens: Number(r.tokens),
      flops: Number(r.flops),
      status: r.status as ReceiptStatus,
    }));
  }

  /** Non-revoked credit per UTC day of issue, for the earnings plot. */
  earningsByDay(days = 30): { day: string; flops: number }[] {
    const since = new Date(this.now() - days * 86_400_000).toISOString();
    return this.db
      .prepare(
        `SELECT substr(r.issued_at, 1, 10) AS day, SUM(r.flops) AS flops
         FROM receipts r JOIN (${Ledger.LATEST_CREDITS}) l ON l.receipt_id = r.receipt_id
         WHERE l.status != 'revoked' AND r.issued_at >= ? GROUP BY day ORDER BY day`,
      )
      .all(since) as { day: string; flops: number }[];
  }

  wallet(recent = 50): WalletSnapshot {
    return {
      ...this.balance(),
      payoutAddress: this.payoutAddress(),
      earnings: this.earningsByDay(),
      recentReceipts: this.receipts(recent),
    };
  }

  /**
   * Walks the whole chain: every row's hash must match its contents, link to the row before, and the
   * sequence must have no gaps up to the recorded head. Receipt signatures are checked again too, so a
   * rewritten chain cannot carry invented receipts.
   */
  verify(onProgress?: (checked: number, total: number) => void): VerifyResult {
    const problems: LedgerProblem[] = [];
    const entries: { table: ChainedTable; row: Row }[] = [];
    for (const table of CHAINED_TABLES) {
      for (const row of this.db.prepare(`SELECT * FROM ${table}`).all() as Row[])
        entries.push({ table, row });
    }
    entries.sort((a, b) => Number(a.row.seq) - Number(b.row.seq));
    let expected = 1;
    let prevHash = GENESIS_HASH;
    for (const [i, { table, row }] of entries.entries()) {
      if (onProgress && i % 10_000 === 0) onProgress(i, entries.length);
      const seq = Number(row.seq);
      const label = `${table} entry #${seq}${describeRow(table, row)}`;
      if (seq < expected) {
        problems.push({ seq, table, message: `${label} duplicates a sequence number (inserted row)` });
        continue;
      }
      if (seq > expected) {
        problems.push({ seq: expected, table: null, message: missing(expected, seq - 1) });
      } else if (row.prev_hash !== prevHash) {
        problems.push({
          seq,
          table,
          message: `${label} does not link to the entry before it (an earlier entry was replaced)`,
        });
      }
      if (rowHash(table, row) !== row.hash) {
        problems.push({ seq, table, message: `${label} was edited: its contents no longer match its hash` });
      } else if (table === 'receipts' && !receiptSignatureValid(storedReceipt(row))) {
        problems.push({
          seq,
          table,
          message: `${label} carries a coordinator signature that does not verify`,
        });
      }
      prevHash = String(row.hash);
      expected = seq + 1;
    }
    onProgress?.(entries.length, entries.length);
    const head = this.db.prepare('SELECT seq, hash FROM chain_head WHERE id = 1').get() as
      { seq: number; hash: string } | undefined;
    const last = expected - 1;
    if (head && head.seq > last)
      problems.push({ seq: last + 1, table: null, message: missing(last + 1, head.seq) });
    else if (head && head.seq === last && head.hash !== prevHash) {
      problems.push({
        seq: last,
        table: null,
        message: `the last entry #${last} was replaced after it was written`,
      });
    } else if (!head && entries.length > 0) {
      problems.push({ seq: 0, table: null, message: 'the chain head record was deleted' });
    }
    return { ok: problems.length === 0, entries: entries.length, problems };
  }

  exportCsv(table: ExportTable): string {
    if (table === 'receipts') {
      const rows = this.db
        .prepare(
          `SELECT r.seq, r.receipt_id, r.run_id, r.node_id, r.stage, r.step, r.micro_batch, r.tokens, r.flops,
                  r.issued_at, l.status, r.signature, r.coordinator_key, r.hash
           FROM receipts r JOIN (${Ledger.LATEST_CREDITS}) l ON l.receipt_id = r.receipt_id ORDER BY r.seq`,
        )
        .all() as Row[];
      const columns = [
        'seq',
        'receipt_id',
        'run_id',
        'node_id',
        'stage',
        'step',
        'micro_batch',
        'tokens',
        'flops',
        'issued_at',
        'status',
        'signature',
        'coordinator_key',
        'hash',
      ];
      return toCsv(columns, rows);
    }
    const stmt = this.db.prepare(`SELECT * FROM ${table} ORDER BY seq`);
    return toCsv(
      stmt.columns().map((c) => c.name),
      stmt.all() as Row[],
    );
  }
}

function missing(from: number, to: number): string {
  return from === to
    ? `entry #${from} is missing (deleted)`
    : `entries #${from} to #${to} are missing (deleted)`;
}

function describeRow(table: ChainedTable, row: Row): string {
  if (table === 'receipts' || table === 'credits') return ` (receipt ${String(row.receipt_id)})`;
  if (table === 'payouts') return ` (payout ${String(row.payout_id)})`;
  if (table === 'events') return ` (${String(row.kind)})`;
  return '';
}

function storedReceipt(row: Row): SignedReceipt {
  const receipt: WorkReceipt = {
    version: 1,
    runId: String(row.run_id),
    receiptId: String(row.receipt_id),
    nodeId: String(row.node_id),
    stage: Number(row.stage),
    step: Number(row.step),
    microBatch: Number(row.micro_batch),
    tokens: Number(row.tokens),
    flops: Number(row.flops),
    issuedAt: String(row.issued_at),
  };
  return { receipt, signature: String(row.signature), coordinatorKey: String(row.coordinator_key) };
}
