import { useEffect, useState } from 'react';
import type { AgentSnapshot } from '../../shared/dashboard/contract.js';
import type { ConnectionState, UiBridge } from '../transport/types.js';

export interface AgentView {
  snapshot: AgentSnapshot | null;
  connection: ConnectionState;
}

/** The latest snapshot and connection state, re-rendering on every change the bridge reports. */
export function useAgent(bridge: UiBridge): AgentView {
  const [snapshot, setSnapshot] = useState<AgentSnapshot | null>(null);
  const [connection, setConnection] = useState<ConnectionState>(() => bridge.connection());

  useEffect(() => {
    let live = true;
    const offSnapshot = bridge.onSnapshot(setSnapshot);
    const offConnection = bridge.onConnection(setConnection);
    // The connection may have opened between the first render and this subscription.
    setConnection(bridge.connection());
    void bridge.snapshot().then((first) => {
      if (live) setSnapshot((current) => current ?? first);
    });
    return () => {
      live = false;
      offSnapshot();
      offConnection();
    };
  }, [bridge]);

  return { snapshot, connection };
}
