import type { AgentBridge } from '../../shared/dashboard/contract.js';

/** How the UI is connected to the agent; shown as a banner whenever it is not `open`. */
export type ConnectionState =
  | { kind: 'connecting' }
  | { kind: 'open' }
  | { kind: 'closed'; reason: string; retryAt: number }
  | { kind: 'unauthorized'; reason: string };

/** The contract's bridge plus the connection state, which only the web transport can lose. */
export interface UiBridge extends AgentBridge {
  connection(): ConnectionState;
  onConnection(listener: (state: ConnectionState) => void): () => void;
  /** Where the whole ledger downloads as CSV; null where only the receipts in the snapshot can be exported. */
  ledgerCsvUrl: string | null;
}
