import type { ReceiptRow, ReceiptStatus } from '../shared/dashboard/contract.js';

/** Receipts further apart than this start a new session. */
const SESSION_GAP_MS = 30 * 60_000;

export interface ReceiptSession {
  /** Stable across renders: the run and the first receipt of the session. */
  key: string;
  runId: string;
  start: string;
  end: string;
  stages: number[];
  receipts: ReceiptRow[];
  tokens: number;
  flops: number;
  byStatus: Record<ReceiptStatus, { count: number; flops: number }>;
  /** How many of its receipts a second replica recomputed and agreed with. */
  verified: number;
}

/**
 * Receipts grouped into contribution sessions (one run, no gap over half an hour), newest first, so the
 * wallet shows a few lines a person can read instead of a wall of near-identical rows.
 */
export function groupIntoSessions(receipts: readonly ReceiptRow[]): ReceiptSession[] {
  const sorted = [...receipts].sort((a, b) => Date.parse(a.issuedAt) - Date.parse(b.issuedAt));
  const sessions: ReceiptSession[] = [];
  let current: ReceiptSession | null = null;
  for (const r of sorted) {
    const gap = current ? Date.parse(r.issuedAt) - Date.parse(current.end) : Infinity;
    if (!current || current.runId !== r.runId || gap > SESSION_GAP_MS) {
      current = {
        key: `${r.runId}/${r.receiptId}`,
        runId: r.runId,
        start: r.issuedAt,
        end: r.issuedAt,
        stages: [],
        receipts: [],
        tokens: 0,
        flops: 0,
        byStatus: {
          confirmed: { count: 0, flops: 0 },
          pending: { count: 0, flops: 0 },
          revoked: { count: 0, flops: 0 },
        },
        verified: 0,
      };
      sessions.push(current);
    }
    current.end = r.issuedAt;
    current.receipts.unshift(r);
    if (!current.stages.includes(r.stage)) current.stages.push(r.stage);
    current.tokens += r.tokens;
    current.flops += r.flops;
    current.byStatus[r.status].count += 1;
    current.byStatus[r.status].flops += r.flops;
    if (r.verified) current.verified += 1;
  }
  return sessions.reverse();
}
