import { useState } from 'react';
import type { AgentCommand, AgentSnapshot, CommandResult } from '../../shared/dashboard/contract.js';
import { formatDateTime } from '../format.js';

export interface PauseControlProps {
  snapshot: AgentSnapshot;
  send: (command: AgentCommand) => Promise<CommandResult>;
}

/** Pause (indefinitely, for an hour, until tomorrow) or resume; says when a timed pause ends. */
export function PauseControl({ snapshot, send }: PauseControlProps) {
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const userPaused = snapshot.reasonCode === 'user-paused';

  const run = async (command: AgentCommand): Promise<void> => {
    setBusy(true);
    setError(null);
    const result = await send(command);
    setBusy(false);
    if (!result.ok) setError(result.errors.join(' '));
  };

  return (
    <div className="pause-control">
      {userPaused ? (
        <>
          <button
            type="button"
            className="primary"
            disabled={busy}
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
            disabled={busy}
            onClick={() => void run({ type: 'pause', duration: 'indefinitely' })}
          >
            Pause
          </button>
          <button type="button" disabled={busy} onClick={() => void run({ type: 'pause', duration: '1h' })}>
            Pause for 1 hour
          </button>
          <button
            type="button"
            disabled={busy}
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
