import type { SignedCreditStatement } from '../../shared/protocol/credit-statement.js';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';

/**
 * How the contributor agent (policy, throttling, ledger) plugs into the node runtime without the runtime
 * knowing about either. The runtime calls these around every micro-batch.
 */
export interface WorkGate {
  /**
   * Resolves when work may start: immediately while running, later while paused. The runtime hands back
   * (or never takes) micro-batches while this is pending, so nothing accepted is lost.
   */
  waitUntilAllowed(signal?: AbortSignal): Promise<void>;
  /** Reports how long the GPU was busy on the last unit; resolves after the pause that keeps the duty cycle. */
  afterWork(busyMs: number): Promise<void>;
}

/** Where verified receipts go: the ledger stores them after checking the coordinator's signature. */
export interface ReceiptSink {
  accept(receipt: SignedReceipt): void;
  /** The coordinator's credit statement, confirming or revoking stored receipts. */
  acceptStatement?(statement: SignedCreditStatement): void;
}

/** A gate that never pauses, for operators who run the node flat out. */
export const alwaysOpen: WorkGate = {
  waitUntilAllowed: () => Promise.resolve(),
  afterWork: () => Promise.resolve(),
};
