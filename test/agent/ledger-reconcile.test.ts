import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ledger, STATEMENT_COMPARISON_SQL } from '../../main/agent/ledger/ledger.js';
import { formatFlops, reconcile, type Reconciliation } from '../../main/agent/wallet.js';
import { creditStatementSchema, type CreditStatement } from '../../shared/protocol/credit-statement.js';
import { downgradeToSchema2 } from './old-ledger.js';
import { testCoordinator, testReceipt, type TestCoordinator } from './signing.js';

const dir = mkdtempSync(join(tmpdir(), 'tributary-reconcile-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/**
 * The reconciliation as the agent computed it before the per-run totals, kept here as the reference: every
 * stored statement parsed again, every receipt's newest credit read again, on each call.
 */
function reconcileByRereading(ledger: Ledger): Reconciliation {
  const rows = ledger.db.prepare('SELECT body, coordinator_key FROM statements ORDER BY seq').all() as {
    body: string;
    coordinator_key: string;
  }[];
  const confirmed = new Set<string>();
  const revoked = new Set<string>();
  const newestTotal = new Map<string, number>();
  for (const row of rows) {
    const s = creditStatementSchema.parse(JSON.parse(row.body));
    for (const id of s.confirmed) confirmed.add(id);
    for (const r of s.revoked) revoked.add(r.receiptId);
    newestTotal.set(`${row.coordinator_key}/${s.runId}`, s.confirmedFlops);
  }
  const statementIds = new Set([...confirmed].filter((id) => !revoked.has(id)));
  const statementFlops = [...newestTotal.values()].reduce((sum, f) => sum + f, 0);
  const local = ledger.db
    .prepare(
      `SELECT r.receipt_id, r.flops FROM receipts r
       WHERE (SELECT status FROM credits c WHERE c.receipt_id = r.receipt_id ORDER BY c.seq DESC LIMIT 1) = 'confirmed'
       ORDER BY r.seq DESC`,
    )
    .all() as { receipt_id: string; flops: number }[];
  const localIds = new Set(local.map((r) => r.receipt_id));
  const missingLocally = [...statementIds].filter((id) => !localIds.has(id));
  const missingFromStatement = local.filter((r) => !statementIds.has(r.receipt_id)).map((r) => r.receipt_id);
  const localFlops = local.reduce((sum, r) => sum + r.flops, 0);
  const differenceFlops = statementFlops - localFlops;
  const tolerance = 1e-9 * Math.max(1, Math.abs(localFlops));
  const matches =
    missingLocally.length === 0 &&
    missingFromStatement.length === 0 &&
    Math.abs(differenceFlops) <= tolerance;
  const parts: string[] = [];
  if (missingLocally.length > 0)
    parts.push(`${missingLocally.length} receipt(s) in the statement are not in your ledger`);
  if (missingFromStatement.length > 0)
    parts.push(`${missingFromStatement.length} receipt(s) in your ledger are not in the statement`);
  if (Math.abs(differenceFlops) > tolerance)
    parts.push(
      `totals differ by ${formatFlops(differenceFlops)} (statement ${formatFlops(statementFlops)}, ledger ${formatFlops(localFlops)})`,
    );
  return {
    matches,
    localFlops,
    statementFlops,
    differenceFlops,
    missingLocally,
    missingFromStatement,
    summary: matches
      ? `Balance matches the coordinator: ${formatFlops(localFlops)}`
      : `Balance differs: ${parts.join('; ')}`,
  };
}

/** The balance and earnings as the wallet read them before the per-run and per-day totals. */
function walletByRereading(ledger: Ledger, days: number) {
  const latest = `SELECT c.receipt_id, c.status, c.flops FROM credits c
    WHERE c.seq = (SELECT MAX(seq) FROM credits WHERE receipt_id = c.receipt_id)`;
  const sums = ledger.db
    .prepare(`SELECT status, SUM(flops) AS flops FROM (${latest}) GROUP BY status`)
    .all() as { status: string; flops: number }[];
  const of = (s: string): number => sums.find((r) => r.status === s)?.flops ?? 0;
  const since = new Date(NOW - days * 86_400_000).toISOString().slice(0, 10);
  const earnings = ledger.db
    .prepare(
      `SELECT substr(r.issued_at, 1, 10) AS day, SUM(r.flops) AS flops
       FROM receipts r JOIN (${latest}) l ON l.receipt_id = r.receipt_id
       WHERE l.status != 'revoked' AND substr(r.issued_at, 1, 10) >= ? GROUP BY day ORDER BY day`,
    )
    .all(since);
  return {
    balance: { confirmedFlops: of('confirmed'), pendingFlops: of('pending'), revokedFlops: of('revoked') },
    earnings,
  };
}

const NOW = Date.UTC(2026, 10, 25, 6);

/** Every receipt id some statement listed as verified by a second replica. */
function statedVerified(ledger: Ledger): Set<string> {
  const bodies = ledger.db.prepare('SELECT body FROM statements').all() as { body: string }[];
  return new Set(bodies.flatMap((b) => (JSON.parse(b.body) as CreditStatement).verified ?? []));
}

/** A deterministic generator (mulberry32), so a failure replays. */
function random(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** What one coordinator knows of one run: what it issued, and its running confirmed total. */
interface Stream {
  coordinator: TestCoordinator;
  runId: string;
  seq: number;
  issued: string[];
  unstated: string[];
  confirmed: string[];
  confirmedFlops: number;
}

const flopsOf = new Map<string, number>();

/**
 * Two coordinators, three runs (two sharing a run id under different keys), `receipts` receipts in all. Some
 * arrive late (after the statement confirming them), some never; statements confirm most of what is
 * outstanding, revoke a few (pending and confirmed), say which a second replica verified, now and then name
 * a receipt nobody issued or state a wrong total; a few credits are confirmed locally without a statement.
 * `check` runs after every statement the ledger stores.
 */
function play(ledger: Ledger, receipts: number, seed: number, check: () => void): number {
  const next = random(seed);
  const [a, b] = [testCoordinator(), testCoordinator()];
  const streams: Stream[] = [
    [a, 'run-1'],
    [a, 'run-2'],
    [b, 'run-1'],
  ].map(([coordinator, runId]) => ({
    coordinator: coordinator as TestCoordinator,
    runId: runId as string,
    seq: 0,
    issued: [],
    unstated: [],
    confirmed: [],
    confirmedFlops: 0,
  }));
  const late: { stream: Stream; n: number }[] = [];
  let stored = 0;
  const deliver = (stream: Stream, n: number): void => {
    // Ten minutes apart: the receipts span three weeks, so the earnings cover many days.
    const issuedAt = new Date(Date.UTC(2026, 10, 1) + n * 600_000).toISOString();
    ledger.acceptReceipt(stream.coordinator.sign(testReceipt(n, { runId: stream.runId, issuedAt })));
  };
  for (let n = 1; n <= receipts; n++) {
    const stream = streams[Math.floor(next() * streams.length)]!;
    const id = `r-${n}`;
    flopsOf.set(id, testReceipt(n).flops);
    stream.issued.push(id);
    stream.unstated.push(id);
    const fate = next();
    if (fate < 0.04) late.push({ stream, n });
    else if (fate > 0.01) deliver(stream, n);
    if (next() < 0.005) {
      const pending = ledger.receipts(20).find((r) => r.status === 'pending');
      if (pending) ledger.confirmCredit(pending.receiptId, 'confirmed by hand');
    }
    if (stream.unstated.length < 40) continue;
    const confirmed = stream.unstated.filter(() => next() < 0.85);
    stream.unstated = stream.unstated.filter((x) => !confirmed.includes(x));
    const revoked = [
      ...stream.unstated.filter(() => next() < 0.1),
      ...stream.confirmed.filter(() => next() < 0.01),
    ];
    stream.unstated = stream.unstated.filter((x) => !revoked.includes(x));
    stream.confirmed = [...stream.confirmed.filter((x) => !revoked.includes(x)), ...confirmed];
    stream.confirmedFlops = stream.confirmed.reduce((sum, x) => sum + flopsOf.get(x)!, 0);
    const ghost = next() < 0.1 ? [`ghost-${n}`] : [];
    stream.seq += 1;
    const result = ledger.applyStatement(
      stream.coordinator.state({
        seq: stream.seq,
        runId: stream.runId,
        receipts: stream.issued.length,
        confirmed: [...confirmed, ...ghost],
        verified: confirmed.filter(() => next() < 0.3),
        revoked: revoked.map((receiptId) => ({ receiptId, reason: 'a replica disagreed' })),
        confirmedFlops: stream.confirmedFlops + (next() < 0.05 ? 1e9 : 0),
      }),
    );
    expect(result.stored).toBe(true);
    stored++;
    check();
    // Receipts held back arrive after the statement that confirmed them.
    for (const held of late.splice(0, late.length)) deliver(held.stream, held.n);
  }
  return stored;
}

describe('reconciliation from per-run totals', () => {
  it('gives what rereading every statement, receipt and credit gave, after each of many statements, and after migrating an older ledger', () => {
    const path = join(dir, 'many.sqlite');
    const ledger = new Ledger(path, { now: () => NOW });
    let checks = 0;
    const statements = play(ledger, 3000, 7, () => {
      expect(reconcile(ledger)).toEqual(reconcileByRereading(ledger));
      // The balance and the last ten days' earnings (the first of them cut by the window) read the same too.
      const old = walletByRereading(ledger, 10);
      expect(ledger.balance()).toEqual(old.balance);
      expect(ledger.earningsByDay(10)).toEqual(old.earnings);
      checks++;
    });
    // Credit confirmed here that no statement confirms (an edited or buggy ledger) shows as a difference.
    const pending = ledger.receipts().filter((r) => r.status === 'pending');
    for (const r of pending.slice(0, 3)) ledger.confirmCredit(r.receiptId, 'by hand');
    expect(reconcile(ledger)).toEqual(reconcileByRereading(ledger));
    const final = reconcileByRereading(ledger);
    // The scenario reaches every kind of difference, so the comparisons above were not all trivial.
    expect(statements).toBeGreaterThan(60);
    expect(checks).toBe(statements);
    expect(final.missingLocally.length).toBeGreaterThan(0);
    expect(final.missingFromStatement.length).toBeGreaterThan(0);
    expect(ledger.receipts().length).toBeGreaterThan(2900);
    const verified = statedVerified(ledger);
    expect(verified.size).toBeGreaterThan(300);
    expect(
      ledger
        .receipts()
        .filter((r) => r.verified)
        .map((r) => r.receiptId)
        .sort(),
    ).toEqual(
      ledger
        .receipts()
        .map((r) => r.receiptId)
        .filter((id) => verified.has(id))
        .sort(),
    );
    ledger.close();

    downgradeToSchema2(path);
    const migrated = new Ledger(path, { now: () => NOW });
    expect(migrated.db.prepare('SELECT MAX(version) AS v FROM migrations').get()).toEqual({ v: 4 });
    expect(reconcile(migrated)).toEqual(final);
    const old = walletByRereading(migrated, 30);
    expect(old.earnings.length).toBeGreaterThan(15);
    expect(migrated.balance()).toEqual(old.balance);
    expect(migrated.earningsByDay(30)).toEqual(old.earnings);
    expect(migrated.receipts().filter((r) => r.verified).length).toBe(
      migrated.receipts().filter((r) => verified.has(r.receiptId)).length,
    );
    migrated.close();
  });

  it('reads index entries only, never every receipt or statement', () => {
    const ledger = new Ledger(join(dir, 'plan.sqlite'));
    const plans = Object.values(STATEMENT_COMPARISON_SQL).map((sql) =>
      (ledger.db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all() as { detail: string }[]).map((r) => r.detail),
    );
    expect(plans).toEqual([
      ['SCAN run_credit'],
      ['SCAN receipt_states USING INDEX receipt_states_missing_locally'],
      ['SCAN receipt_states USING INDEX receipt_states_missing_from_statement'],
    ]);
    ledger.close();
  });
});
