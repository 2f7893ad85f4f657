import type { ConnectionState } from '../transport/types.js';
import { useNow } from './use-now.js';

/** Says, when the UI is not talking to the agent, why and what happens next. */
export function ConnectionBanner({ connection }: { connection: ConnectionState }) {
  const now = useNow(connection.kind === 'closed');

  if (connection.kind === 'open') return null;
  let text: string;
  if (connection.kind === 'connecting') text = 'Connecting to the Tributary agent…';
  else if (connection.kind === 'unauthorized') text = connection.reason;
  else {
    const seconds = Math.max(0, Math.ceil((connection.retryAt - now) / 1000));
    text = `${connection.reason} Retrying in ${seconds} s. What you see below is the last known state.`;
  }
  return (
    <div className={`banner banner-${connection.kind}`} role="status">
      {text}
    </div>
  );
}
