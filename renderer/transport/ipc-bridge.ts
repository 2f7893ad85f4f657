import type { AgentBridge } from '../../shared/dashboard/contract.js';
import type { ConnectionState, UiBridge } from './types.js';

const OPEN: ConnectionState = { kind: 'open' };

/** The Electron preload's bridge: main hosts the agent in-process, so the connection cannot drop. */
export function fromPreloadBridge(bridge: AgentBridge): UiBridge {
  return {
    snapshot: () => bridge.snapshot(),
    onSnapshot: (listener) => bridge.onSnapshot(listener),
    command: (command) => bridge.command(command),
    connection: () => OPEN,
    onConnection: () => () => undefined,
    ledgerCsvUrl: null,
  };
}
