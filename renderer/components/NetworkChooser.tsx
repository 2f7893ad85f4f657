import { useState, type FormEvent } from 'react';
import { CodeInput, ErrorAlert } from './CodeInput.js';
import type { AgentCommand, CommandResult, NetworkProbe } from '../../shared/dashboard/contract.js';
import { NETWORK_URL_PATTERN } from '../../shared/dashboard/settings.js';

/** A quick check before asking the agent, which connects and has the final word. */
export function networkUrlProblem(url: string): string | null {
  if (url === '') return 'Enter the network’s address, like ws://coordinator.example:7800.';
  if (!NETWORK_URL_PATTERN.test(url)) return 'A network address starts with ws:// or wss://.';
  return null;
}

/**
 * Asks a network who it is: the person types its address, the agent connects and returns the coordinator's
 * key and run, which are shown so the person can compare them with what the network publishes. `onFound`
 * hands the probe up; accepting it (elsewhere) pins that key.
 */
export function NetworkChooser({
  id,
  send,
  found,
  onFound,
  disabled,
}: {
  id: string;
  send: (command: AgentCommand) => Promise<CommandResult>;
  found: NetworkProbe | null;
  onFound: (probe: NetworkProbe | null) => void;
  disabled?: boolean;
}) {
  const [url, setUrl] = useState(found?.url ?? '');
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);

  const check = async (event?: FormEvent): Promise<void> => {
    event?.preventDefault();
    const address = url.trim();
    const problem = networkUrlProblem(address);
    if (problem) {
      setError(problem);
      return;
    }
    setBusy(true);
    setError(null);
    const result = await send({ type: 'probeNetwork', url: address });
    setBusy(false);
    if (!result.ok) {
      setError(result.errors.map((e) => e.replace(/^url: /, '')).join(' '));
      onFound(null);
    } else onFound(result.probe ?? null);
  };

  const invalid = error !== null;
  return (
    <div className="network-chooser">
      <label htmlFor={`${id}-url`}>Network address</label>
      <div className="input-row">
        <CodeInput
          id={`${id}-url`}
          placeholder="ws://host:port"
          value={url}
          invalid={invalid}
          aria-describedby={invalid ? `${id}-url-error` : `${id}-url-hint`}
          disabled={disabled}
          onChange={(e) => {
            setUrl(e.target.value);
            if (found) onFound(null);
          }}
          onKeyDown={(e) => {
            if (e.key === 'Enter') void check(e);
          }}
        />
        <button type="button" disabled={busy || disabled} onClick={() => void check()}>
          {busy ? 'Checking…' : 'Check'}
        </button>
      </div>
      {invalid ? (
        <ErrorAlert id={`${id}-url-error`} errors={[error]} />
      ) : (
        <p id={`${id}-url-hint`} className="hint">
          The address the network’s organisers publish.
        </p>
      )}
      {found ? (
        <div className="probe" role="status">
          <p>
            Found run <strong>{found.runId}</strong> at {found.url}.
          </p>
          <p className="key-line">
            Coordinator key: <code className="key">{found.coordinatorKey}</code>
          </p>
          <p className="hint">
            Compare it with the key the network publishes. Tributary will only ever work for the coordinator
            that holds this key.
          </p>
        </div>
      ) : null}
    </div>
  );
}
