import { useEffect, useRef, useState } from 'react';
import type { AgentSnapshot } from '../../shared/dashboard/contract.js';
import { STATE_LABEL } from '../format.js';

/**
 * Tells screen-reader users when the state changes (a pause takes effect, the network drops, the run ends),
 * politely and only on a change of state or its cause, not on every second's new numbers.
 */
export function StateAnnouncer({ snapshot }: { snapshot: AgentSnapshot | null }) {
  const [message, setMessage] = useState('');
  const last = useRef<string | null>(null);
  useEffect(() => {
    if (!snapshot) return;
    const key = `${snapshot.state}/${snapshot.reasonCode}`;
    if (last.current !== null && last.current !== key) {
      setMessage(`${STATE_LABEL[snapshot.state]}: ${snapshot.reason}`);
    }
    last.current = key;
  }, [snapshot]);
  return (
    <div className="visually-hidden" aria-live="polite" data-testid="announcer">
      {message}
    </div>
  );
}
