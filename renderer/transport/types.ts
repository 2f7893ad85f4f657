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
}
