import { useEffect, useState } from 'react';
import type { ConnectionState } from '../transport/types.js';

/** Says, when the UI is not talking to the agent, why and what happens next. */
export function ConnectionBanner({ connection }: { connection: ConnectionState }) {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (connection.kind !== 'closed') return;
    const timer = window.setInterval(() => setNow(Date.now()), 1000);
    return () => window.clearInterval(timer);
  }, [connection]);

  if (connection.kind === 'open') return null;
  let text: string;
  if (connection.kind === 'connecting') text = 'Connecting to the Tributary agent…';
  else if (connection.kind === 'unauthorized') text = connection.reason;
  else {
    const seconds = Math.max(0, Math.ceil((connection.retryAt - now) / 1000));
    text = `${connection.reason} Retrying in ${seconds} s.`;
  }
  return (
    <div className={`banner banner-${connection.kind}`} role="status">
      {text}
    </div>
  );
}
