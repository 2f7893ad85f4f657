import { useEffect, useRef, useState } from 'react';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { formatDateTime } from '../format.js';

export interface PauseControlProps {
  snapshot: AgentSnapshot;
  send: (command: AgentCommand) => Promise<CommandResult>;
  /** The agent cannot be reached: nothing can be sent. */
  disabled?: boolean;
}

/** Pause (indefinitely, for an hour, until tomorrow) or resume; says when a timed pause ends. */
export function PauseControl({ snapshot, send, disabled = false }: PauseControlProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const userPaused = snapshot.reasonCode === 'user-paused';
  const container = useRef<HTMLDivElement>(null);
  const keepFocus = useRef(false);

  // The button pressed is replaced (Pause <-> Resume): once the agent has answered, focus moves to its
  // replacement instead of falling back to the page.
  useEffect(() => {
    if (busy || !keepFocus.current) return;
    keepFocus.current = false;
    const root = container.current;
    if (root && !root.contains(document.activeElement))
      root.querySelector<HTMLButtonElement>('button')?.focus();
  }, [busy, userPaused]);

  const run = async (command: AgentCommand): Promise<void> => {
    keepFocus.current = container.current?.contains(document.activeElement) ?? false;
    setBusy(true);
    setError(null);
    const result = await send(command);
    setBusy(false);
    if (!result.ok) setError(result.errors.join(' '));
  };

  return (
    <div className="pause-control" ref={container}>
      {userPaused ? (
        <>
          <button
            type="button"
            className="primary"
            disabled={busy || disabled}
            onClick={() => void run({ type: 'resume' })}
          >
            Resume now
          </button>
          <span className="pause-until">
            {snapshot.resumeAt
              ? `Paused until ${formatDateTime(snapshot.resumeAt)}`
              : 'Paused until you resume'}
          </span>
        </>
      ) : (
        <div className="button-row" role="group" aria-label="Pause contributing">
          <button
            type="button"
            className="primary"
            disabled={busy || disabled}
            onClick={() => void run({ type: 'pause', duration: 'indefinitely' })}
          >
            Pause
          </button>
          <button
            type="button"
            disabled={busy || disabled}
            onClick={() => void run({ type: 'pause', duration: '1h' })}
          >
            Pause for 1 hour
          </button>
          <button
            type="button"
            disabled={busy || disabled}
            onClick={() => void run({ type: 'pause', duration: 'tomorrow' })}
          >
            Pause until tomorrow
          </button>
        </div>
      )}
      {error ? (
        <p className="error" role="alert">
          {error}
        </p>
      ) : null}
    </div>
  );
}
