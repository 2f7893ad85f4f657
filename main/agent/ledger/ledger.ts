import { chmodSync, closeSync, existsSync, openSync } from 'node:fs';
import Database from 'better-sqlite3';
import type { ReceiptRow, ReceiptStatus, WalletSnapshot } from '../../../shared/dashboard/contract.js';
import {
  creditStatementSchema,
  signedCreditStatementSchema,
  type CreditStatement,
} from '../../../shared/protocol/credit-statement.js';
import { canonicalJson, parseJsonOrNull } from '../../../shared/protocol/receipt.js';
import {
  signedReceiptSchema,
  type SignedReceipt,
  type WorkReceipt,
} from '../../../shared/protocol/receipt.js';
import { GENESIS_HASH, rowHash, type RowValue } from './chain.js';
import { toCsv } from './csv.js';
import { readHead, writeHead, type HeadSigner } from './head-file.js';
import {
  CHAINED_TABLES,
  migrate,
  RETIRED_TABLES,
  STATED_VERIFIED,
  type ChainedTable,
  type WritableTable,
} from './schema.js';
import { receiptSignatureValid, statementSignatureValid } from './verify-receipt.js';

export interface LedgerOptions {
  /**
   * Coordinator public keys (hex) whose receipts and statements are accepted; more can be added with
   * trustCoordinatorKey. Left out, any validly signed receipt is accepted (tools and tests only).
   */
  trustedCoordinatorKeys?: readonly string[];
  /** This node's public key (hex); receipts for another node are refused. */
  nodeId?: string;
  now?: () => number;
  /** Signs the chain head kept beside the ledger (head-file.ts); unsigned without one. */
  headSigner?: HeadSigner;
  /** Open an existing ledger without writing anything to it (verify, export). */
  readonly?: boolean;
}

export class ReceiptRejected extends Error {}
export class StatementRejected extends Error {}
/** The disk is full: the append was rolled back whole. */
export class LedgerFull extends Error {}

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
}

/** The ledger beside the coordinator's statements, across every run (wallet.ts explains the difference). */
export interface StatementComparison {
  /** Credit confirmed in this ledger. */
  localFlops: number;
  /** The sum of each run's newest statement's confirmed total. */
  statementFlops: number;
  /** Confirmed by a statement (and revoked by none) but not confirmed here, in the order first confirmed. */
  missingLocally: string[];
  /** Confirmed here but not by any statement (or revoked by one), newest receipt first. */
  missingFromStatement: string[];
}

export const EXPORT_TABLES = ['receipts', 'credits', 'work_units', 'events'] as const;
export type ExportTable = (typeof EXPORT_TABLES)[number];

type Row = Record<string, RowValue>;

/**
 * What compareWithStatements reads: one row per run, and the entries of two partial indexes (schema.ts),
 * which hold only the receipts on which the ledger and the statements differ.
 */
export const STATEMENT_COMPARISON_SQL = {
  totals: 'SELECT TOTAL(confirmed_flops) AS local, TOTAL(statement_flops) AS stated FROM run_credit',
  missingLocally: `SELECT receipt_id FROM receipt_states WHERE stated = 'confirmed' AND status IS NOT 'confirmed'
    ORDER BY first_confirmed`,
  missingFromStatement: `SELECT receipt_id FROM receipt_states WHERE status = 'confirmed' AND stated IS NOT 'confirmed'
    ORDER BY receipt_seq DESC`,
} as const;

/**
 * The contributor's tamper-evident record: an append-only SQLite file (WAL, synchronous = NORMAL: a power
 * cut may undo the last few commits, never corrupt them) whose rows form one hash chain across all tables.
 * Each append is one transaction, so a kill at any instant leaves either the whole row and the new chain
 * head, or neither.
 */
export class Ledger {
  readonly db: Database.Database;
  private readonly now: () => number;
  /** Bumped on every append by this process, so readers can cache derived views. */
  revision = 0;
  private readonly statements = new Map<string, Database.Statement>();
  /** Keys trusted after opening (trustCoordinatorKey), beside the caller's list, which may grow too. */
  private readonly learned = new Set<string>();
  /** The sequence number the head file beside the ledger was last written with. */
  private headSeq = -1;

  constructor(
    readonly path: string,
    private readonly options: LedgerOptions = {},
  ) {
    this.now = options.now ?? Date.now;
    if (options.readonly) {
      this.db = new Database(path, { readonly: true, fileMustExist: true });
      return;
    }
    // Created 0600 before SQLite opens it: SQLite gives its -wal and -shm files the same mode.
    if (!existsSync(path)) closeSync(openSync(path, 'a', 0o600));
    if (process.platform !== 'win32') chmodSync(path, 0o600);
    this.db = new Database(path);
    this.db.pragma('journal_mode = WAL');
    // WAL + NORMAL: a killed process never loses or tears a commit; only a power cut can roll back the
    // last few (never corrupt them), and those receipts show up again when reconciling with the coordinator.
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 5000');
    migrate(this.db);
    this.writeHeadFile();
  }

  /** Accept receipts and statements signed by this coordinator key too (first contact, trust on first use). */
  trustCoordinatorKey(keyHex: string): void {
    this.learned.add(keyHex);
  }

  private trusts(keyHex: string): boolean {
    const listed = this.options.trustedCoordinatorKeys;
    return listed === undefined || listed.includes(keyHex) || this.learned.has(keyHex);
  }

  private chainHead(): { seq: number; hash: string } | undefined {
    return this.statement('SELECT seq, hash FROM chain_head WHERE id = 1').get() as
      { seq: number; hash: string } | undefined;
  }

  /** Mirrors the committed chain head into the signed file beside the ledger; its sequence never goes back. */
  private writeHeadFile(): void {
    const head = this.chainHead();
    if (!head || head.seq <= this.headSeq) return;
    if (this.headSeq < 0) {
      // A head file ahead of the chain records lost entries: keep it as evidence, never overwrite it.
      const previous = readHead(this.path);
      if (previous.kind === 'ok' && previous.head.seq > head.seq) return;
    }
    try {
      writeHead(this.path, head.seq, head.hash, this.options.headSigner);
      this.headSeq = head.seq;
    } catch {
      // A full disk: the head file lags the chain, which verify accepts; the next commit writes it again.
    }
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

  private append(table: WritableTable, content: Row): number {
    const head = this.chainHead();
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
    let result: T;
    try {
      result = this.db.transaction(fn).immediate();
    } catch (err) {
      // SQLite rolled the transaction back whole: the ledger is as it was before this append.
      if ((err as { code?: string }).code === 'SQLITE_FULL')
        throw new LedgerFull(
          `the disk under the ledger (${this.path}) is full: nothing was written and nothing is lost; ` +
            'free some space and Tributary carries on (the coordinator still holds every receipt)',
        );
      throw err;
    }
    if (!this.db.inTransaction) this.writeHeadFile();
    return result;
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
    if (!this.trusts(signed.coordinatorKey)) {
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

  /**
   * Applies the coordinator's signed credit statement: stores it in the chain, then confirms and revokes the
   * credits it names. A statement no newer than the last one stored from that coordinator is a no-op.
   * Receipts it names that the ledger does not hold are left for reconciliation.
   */
  applyStatement(input: unknown): { stored: boolean; confirmed: number; revoked: number } {
    const parsed = signedCreditStatementSchema.safeParse(input);
    if (!parsed.success)
      throw new StatementRejected(`malformed statement: ${parsed.error.issues[0]?.message ?? 'invalid'}`);
    const signed = parsed.data;
    const s = signed.statement;
    if (!this.trusts(signed.coordinatorKey))
      throw new StatementRejected(`statement #${s.seq} is signed by an unknown coordinator key`);
    if (this.options.nodeId !== undefined && s.nodeId !== this.options.nodeId)
      throw new StatementRejected(`statement #${s.seq} was issued to another node`);
    if (!statementSignatureValid(signed))
      throw new StatementRejected(`statement #${s.seq} has a signature that does not verify`);
    return this.inTransaction(() => {
      const last = this.statement(
        'SELECT MAX(statement_seq) AS n FROM statements WHERE coordinator_key = ? AND run_id = ?',
      ).get(signed.coordinatorKey, s.runId) as { n: number | null };
      if ((last.n ?? 0) >= s.seq) return { stored: false, confirmed: 0, revoked: 0 };
      this.append('statements', {
        run_id: s.runId,
        statement_seq: s.seq,
        body: canonicalJson(s),
        signature: signed.signature,
        coordinator_key: signed.coordinatorKey,
        at: this.iso(),
      });
      let confirmed = 0;
      let revoked = 0;
      for (const id of s.confirmed) {
        if (this.creditStatus(id)?.status !== 'pending') continue;
        this.confirmCredit(id, `statement #${s.seq}`);
        confirmed++;
      }
      for (const { receiptId, reason } of s.revoked) {
        const status = this.creditStatus(receiptId)?.status;
        if (status !== 'pending' && status !== 'confirmed') continue;
        this.revokeCredit(receiptId, `statement #${s.seq}: ${reason}`);
        revoked++;
      }
      return { stored: true, confirmed, revoked };
    });
  }

  /**
   * The ledger beside what the coordinator's statements confirm, from the per-run totals and the receipt
   * states the triggers keep (schema.ts): a few index reads however long the ledger, plus one per difference.
   */
  compareWithStatements(): StatementComparison {
    const totals = this.statement(STATEMENT_COMPARISON_SQL.totals).get() as { local: number; stated: number };
    const ids = (sql: string): string[] =>
      (this.statement(sql).all() as { receipt_id: string }[]).map((r) => r.receipt_id);
    return {
      localFlops: totals.local,
      statementFlops: totals.stated,
      missingLocally: ids(STATEMENT_COMPARISON_SQL.missingLocally),
      missingFromStatement: ids(STATEMENT_COMPARISON_SQL.missingFromStatement),
    };
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

  /** From the per-run totals (schema.ts): one row per run, however long the ledger. */
  balance(): Balance {
    const totals = this.statement(
      `SELECT TOTAL(confirmed_flops) AS confirmed, TOTAL(pending_flops) AS pending,
              TOTAL(revoked_flops) AS revoked FROM run_credit`,
    ).get() as { confirmed: number; pending: number; revoked: number };
    return { confirmedFlops: totals.confirmed, pendingFlops: totals.pending, revokedFlops: totals.revoked };
  }

  /** Receipts with their current credit state and whether a second replica verified them, newest first. */
  receipts(limit = 1_000_000): ReceiptRow[] {
    const rows = this.statement(
      `SELECT r.receipt_id, r.run_id, r.issued_at, r.stage, r.step, r.tokens, r.flops, s.status, s.verified
       FROM receipts r JOIN receipt_states s ON s.receipt_id = r.receipt_id
       ORDER BY r.seq DESC LIMIT ?`,
    ).all(limit) as Row[];
    return rows.map((r) => ({
      receiptId: String(r.receipt_id),
      runId: String(r.run_id),
      issuedAt: String(r.issued_at),
      stage: Number(r.stage),
      step: Number(r.step),
      tokens: Number(r.tokens),
      flops: Number(r.flops),
      status: r.status as ReceiptStatus,
      verified: r.verified === 1,
    }));
  }

  /**
   * Credit not revoked per UTC day of issue, for the earnings plot: the last `days` days, the first of them
   * whole, from the per-day totals (schema.ts).
   */
  earningsByDay(days = 30): { day: string; flops: number }[] {
    const since = new Date(this.now() - days * 86_400_000).toISOString().slice(0, 10);
    return this.statement(
      'SELECT day, flops FROM day_credit WHERE day >= ? AND receipts > 0 ORDER BY day',
    ).all(since) as { day: string; flops: number }[];
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
   * sequence must have no gaps up to the recorded head and the signed head file beside the ledger. Receipt
   * and statement signatures are checked again, every credit must carry its signed receipt's amount, and a
   * confirmed or revoked credit needs a coordinator statement that says so: rewriting rows and recomputing
   * the chain cannot invent, inflate or confirm credit. The newest statement from each coordinator says how
   * many receipts it had sent, so deleting the newest receipts shows too.
   */
  verify(onProgress?: (checked: number, total: number) => void): VerifyResult {
    const problems: LedgerProblem[] = [];
    const entries: { table: ChainedTable; row: Row }[] = [];
    for (const table of this.chainedTables()) {
      for (const row of this.db.prepare(`SELECT * FROM ${table}`).all() as Row[])
        entries.push({ table, row });
    }
    entries.sort((a, b) => Number(a.row.seq) - Number(b.row.seq));
    const receipts = new Map<string, HeldReceipt>();
    /** receiptId -> statuses some verified statement gave it. */
    const stated = new Map<string, Set<ReceiptStatus>>();
    const newestStatements = new Map<string, { statement: CreditStatement; seq: number; key: string }>();
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
      prevHash = String(row.hash);
      expected = seq + 1;
      if (rowHash(table, row) !== row.hash) {
        problems.push({ seq, table, message: `${label} was edited: its contents no longer match its hash` });
        // Counted, so the rows that refer to it do not each report the same edit again.
        if (table === 'receipts')
          receipts.set(String(row.receipt_id), {
            flops: null,
            runId: String(row.run_id),
            key: String(row.coordinator_key),
            nodeId: String(row.node_id),
          });
        continue;
      }
      const problem = this.checkContent(table, row, { receipts, stated, newestStatements });
      if (problem) problems.push({ seq, table, message: `${label} ${problem}` });
    }
    onProgress?.(entries.length, entries.length);
    for (const { statement, seq, key } of newestStatements.values()) {
      const held = [...receipts.values()].filter(
        (r) => r.runId === statement.runId && r.nodeId === statement.nodeId && r.key === key,
      ).length;
      if (held < statement.receipts)
        problems.push({
          seq,
          table: 'statements',
          message:
            `the coordinator's statement #${statement.seq} for run ${statement.runId} says it sent ` +
            `${statement.receipts} receipts; the ledger holds ${held} (receipts were deleted)`,
        });
    }
    const last = expected - 1;
    problems.push(...this.checkHeads(last, prevHash, entries.length, receipts));
    // Once the chain holds, what the triggers derived from it must agree with it too.
    if (problems.length === 0) problems.push(...this.checkDerivedState());
    return { ok: problems.length === 0, entries: entries.length, problems };
  }

  /** What is wrong with one row whose hash holds, beyond the chain itself; null when nothing. */
  private checkContent(
    table: ChainedTable,
    row: Row,
    seen: {
      receipts: Map<string, HeldReceipt>;
      stated: Map<string, Set<ReceiptStatus>>;
      newestStatements: Map<string, { statement: CreditStatement; seq: number; key: string }>;
    },
  ): string | null {
    if (table === 'receipts') {
      const signed = storedReceipt(row);
      if (!receiptSignatureValid(signed)) return 'carries a coordinator signature that does not verify';
      seen.receipts.set(signed.receipt.receiptId, {
        flops: signed.receipt.flops,
        runId: signed.receipt.runId,
        key: signed.coordinatorKey,
        nodeId: signed.receipt.nodeId,
      });
    } else if (table === 'statements') {
      const statement = creditStatementSchema.safeParse(parseJsonOrNull(String(row.body)));
      if (
        !statement.success ||
        !statementSignatureValid({
          statement: statement.data,
          signature: String(row.signature),
          coordinatorKey: String(row.coordinator_key),
        })
      )
        return 'carries a coordinator signature that does not verify';
      for (const id of statement.data.confirmed) addTo(seen.stated, id, 'confirmed');
      for (const { receiptId } of statement.data.revoked) addTo(seen.stated, receiptId, 'revoked');
      const key = String(row.coordinator_key);
      seen.newestStatements.set(`${key} ${statement.data.runId}`, {
        statement: statement.data,
        seq: Number(row.seq),
        key,
      });
    } else if (table === 'credits') {
      const id = String(row.receipt_id);
      const receipt = seen.receipts.get(id);
      if (!receipt) return 'credits a receipt the ledger does not hold';
      if (receipt.flops !== null && Number(row.flops) !== receipt.flops)
        return `credits ${String(row.flops)} FLOP but its signed receipt says ${receipt.flops}`;
      const status = row.status as ReceiptStatus;
      if (status !== 'pending' && !seen.stated.get(id)?.has(status))
        return `is ${status} but no coordinator statement says so`;
    }
    return null;
  }

  /**
   * The receipt states, run totals and day totals the triggers keep (schema.ts), recomputed from the chain:
   * an edit to them (marking work verified, making reconciliation match, inflating the balance) shows.
   * Absent from ledgers older versions wrote, which verify reads without migrating.
   */
  private checkDerivedState(): LedgerProblem[] {
    if (!this.hasTable('receipt_states')) return [];
    const problems: LedgerProblem[] = [];
    const edited = (what: string): void =>
      void problems.push({
        seq: 0,
        table: null,
        message: `${what} was edited: it no longer matches the ledger's credits and the coordinator's statements`,
      });
    const stored = new Map(
      (this.db.prepare('SELECT receipt_id, status, verified FROM receipt_states').all() as Row[]).map((r) => [
        r.receipt_id,
        r,
      ]),
    );
    const receipts = this.db
      .prepare(
        `SELECT r.receipt_id, r.coordinator_key, r.run_id, substr(r.issued_at, 1, 10) AS day, r.flops,
                (SELECT c.status FROM credits c WHERE c.receipt_id = r.receipt_id ORDER BY c.seq DESC LIMIT 1)
                  AS status,
                r.receipt_id IN (${STATED_VERIFIED}) AS verified
         FROM receipts r`,
      )
      .all() as {
      receipt_id: string;
      coordinator_key: string;
      run_id: string;
      day: string;
      flops: number;
      status: ReceiptStatus | null;
      verified: number;
    }[];
    const runs = new Map<string, Record<string, number | null>>();
    const run = (key: string, runId: string): Record<string, number | null> => {
      const id = `${key} ${runId}`;
      let totals = runs.get(id);
      if (!totals) {
        totals = { confirmed_flops: 0, pending_flops: 0, revoked_flops: 0, statement_flops: null };
        runs.set(id, totals);
      }
      return totals;
    };
    const days = new Map<string, { receipts: number; flops: number }>();
    for (const r of receipts) {
      const state = stored.get(r.receipt_id);
      if (state?.status !== r.status || state.verified !== r.verified)
        edited(`the stored state of receipt ${r.receipt_id} (credit status or verification)`);
      if (r.status === null) continue;
      const totals = run(r.coordinator_key, r.run_id);
      totals[`${r.status}_flops`] = (totals[`${r.status}_flops`] ?? 0) + r.flops;
      if (r.status === 'revoked') continue;
      const day = days.get(r.day) ?? { receipts: 0, flops: 0 };
      days.set(r.day, { receipts: day.receipts + 1, flops: day.flops + r.flops });
    }
    const newest = this.db
      .prepare(
        `SELECT coordinator_key, run_id, json_extract(body, '$.confirmedFlops') AS flops FROM statements s
         WHERE seq = (SELECT MAX(seq) FROM statements WHERE coordinator_key = s.coordinator_key AND run_id = s.run_id)`,
      )
      .all() as { coordinator_key: string; run_id: string; flops: number }[];
    for (const s of newest) run(s.coordinator_key, s.run_id).statement_flops = s.flops;
    // Summed in another order than the triggers summed, so equal up to rounding.
    const differs = (a: RowValue | undefined, b: number | null | undefined): boolean =>
      a === null || a === undefined || b === null || b === undefined
        ? (a ?? null) !== (b ?? null)
        : Math.abs(Number(a) - b) > 1e-9 * Math.max(1, Math.abs(b));
    const storedRuns = this.db.prepare('SELECT * FROM run_credit').all() as Row[];
    const columns = ['confirmed_flops', 'pending_flops', 'revoked_flops', 'statement_flops'];
    for (const row of storedRuns) {
      const expected = runs.get(`${String(row.coordinator_key)} ${String(row.run_id)}`);
      runs.delete(`${String(row.coordinator_key)} ${String(row.run_id)}`);
      if (!expected || columns.some((c) => differs(row[c], expected[c])))
        edited(`the stored totals of run ${String(row.run_id)}`);
    }
    for (const id of runs.keys()) edited(`the stored totals of run ${id.split(' ')[1]}`);
    const storedDays = this.db
      .prepare('SELECT day, receipts, flops FROM day_credit WHERE receipts > 0')
      .all() as {
      day: string;
      receipts: number;
      flops: number;
    }[];
    for (const row of storedDays) {
      const expected = days.get(row.day);
      days.delete(row.day);
      if (expected?.receipts !== row.receipts || differs(row.flops, expected.flops))
        edited(`the stored earnings of ${row.day}`);
    }
    for (const day of days.keys()) edited(`the stored earnings of ${day}`);
    return problems;
  }

  private hasTable(name: string): boolean {
    return (
      this.db.prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?").get(name) !== undefined
    );
  }

  /** The in-file chain head and the signed head file beside the ledger against the last entry. */
  private checkHeads(
    last: number,
    lastHash: string,
    entries: number,
    receipts: Map<string, { nodeId: string }>,
  ): LedgerProblem[] {
    const problems: LedgerProblem[] = [];
    const head = this.db.prepare('SELECT seq, hash FROM chain_head WHERE id = 1').get() as
      { seq: number; hash: string } | undefined;
    const inFileGap = head !== undefined && head.seq > last;
    if (inFileGap) problems.push({ seq: last + 1, table: null, message: missing(last + 1, head.seq) });
    else if (head && head.seq === last && head.hash !== lastHash) {
      problems.push({
        seq: last,
        table: null,
        message: `the last entry #${last} was replaced after it was written`,
      });
    } else if (!head && entries > 0) {
      problems.push({ seq: 0, table: null, message: 'the chain head record was deleted' });
    }
    if (this.path === ':memory:') return problems;
    const file = readHead(this.path);
    if (file.kind === 'invalid') {
      problems.push({
        seq: 0,
        table: null,
        message: `the signed chain head beside the ledger is invalid: ${file.why}`,
      });
      return problems;
    }
    if (file.kind === 'absent') {
      if (entries > 0)
        problems.push({ seq: 0, table: null, message: 'the signed chain head beside the ledger is missing' });
      return problems;
    }
    const nodeIds = new Set([...receipts.values()].map((r) => r.nodeId));
    // Unsigned where the host has no node key to sign with; a signed head must be this ledger's node's.
    if (file.head.nodeId !== null && nodeIds.size > 0 && !nodeIds.has(file.head.nodeId))
      problems.push({
        seq: 0,
        table: null,
        message: "the chain head beside the ledger is not signed by this ledger's node",
      });
    if (file.head.seq > last && !(inFileGap && head.seq >= file.head.seq)) {
      problems.push({
        seq: last + 1,
        table: null,
        message: `${missing(last + 1, file.head.seq)}: the signed chain head records ${file.head.seq} entries, the ledger ends at #${last}`,
      });
    } else if (file.head.seq > 0 && file.head.seq <= last) {
      const at = entries > 0 ? this.hashAt(file.head.seq) : null;
      if (at !== file.head.hash)
        problems.push({
          seq: file.head.seq,
          table: null,
          message: `entry #${file.head.seq} differs from the one the signed chain head recorded (it was replaced)`,
        });
    }
    return problems;
  }

  /** The chained tables this file has: a read-only ledger from an older version may lack newer ones. */
  private chainedTables(): ChainedTable[] {
    const present = new Set(
      (
        this.db.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all() as { name: string }[]
      ).map((t) => t.name),
    );
    return [...CHAINED_TABLES, ...RETIRED_TABLES].filter((t) => present.has(t));
  }

  private hashAt(seq: number): string | null {
    for (const table of this.chainedTables()) {
      const row = this.db.prepare(`SELECT hash FROM ${table} WHERE seq = ?`).get(seq) as
        { hash: string } | undefined;
      if (row) return row.hash;
    }
    return null;
  }

  exportCsv(table: ExportTable): string {
    if (table === 'receipts') {
      // From the statements themselves, so a read-only ledger an older version wrote exports it too.
      const verified = this.chainedTables().includes('statements')
        ? `r.receipt_id IN (${STATED_VERIFIED})`
        : '0';
      const rows = this.db
        .prepare(
          `SELECT r.seq, r.receipt_id, r.run_id, r.node_id, r.stage, r.step, r.micro_batch, r.tokens, r.flops,
                  r.issued_at, l.status, ${verified} AS verified, r.signature, r.coordinator_key, r.hash
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
        'verified',
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

/** A receipt verify has seen; flops null when its row was edited (already reported). */
interface HeldReceipt {
  flops: number | null;
  runId: string;
  key: string;
  nodeId: string;
}

function addTo(map: Map<string, Set<ReceiptStatus>>, id: string, status: ReceiptStatus): void {
  const set = map.get(id) ?? new Set<ReceiptStatus>();
  set.add(status);
  map.set(id, set);
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
  if (table === 'statements') return ` (statement ${String(row.statement_seq)})`;
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
