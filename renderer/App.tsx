import { useEffect, useState } from 'react';
import iconUrl from '../assets/icon.svg?url';
import { ConnectionBanner } from './components/ConnectionBanner.js';
import { StateAnnouncer } from './components/StateAnnouncer.js';
import { STATE_LABEL } from './format.js';
import { useAgent } from './state/use-agent.js';
import type { UiBridge } from './transport/types.js';
import { Dashboard } from './views/Dashboard.js';
import { FirstRun } from './views/FirstRun.js';
import { Settings } from './views/Settings.js';
import { Wallet } from './views/Wallet.js';

const VIEWS = [
  { id: 'dashboard', title: 'Dashboard' },
  { id: 'wallet', title: 'Wallet' },
  { id: 'settings', title: 'Settings' },
] as const;
type ViewId = (typeof VIEWS)[number]['id'];

function viewFromHash(hash: string): ViewId {
  const id = hash.replace(/^#\/?/, '');
  return VIEWS.find((v) => v.id === id)?.id ?? 'dashboard';
}

/** Hash routing: in-page, so the Electron shell's navigation block never sees it. */
function useView(): ViewId {
  const [view, setView] = useState(() => viewFromHash(window.location.hash));
  useEffect(() => {
    const onHash = (): void => setView(viewFromHash(window.location.hash));
    window.addEventListener('hashchange', onHash);
    return () => window.removeEventListener('hashchange', onHash);
  }, []);
  return view;
}

export function App({ bridge }: { bridge: UiBridge }) {
  const { snapshot, connection } = useAgent(bridge);
  const view = useView();
  // The first run takes over every view until the person has chosen a network and accepted.
  const setUp = snapshot?.reasonCode !== 'not-set-up';
  const title = !setUp ? 'Welcome to Tributary' : VIEWS.find((v) => v.id === view)!.title;
  // What the agent last said, shown greyed with every control disabled until it can be reached again.
  const stale = snapshot !== null && connection.kind !== 'open';

  useEffect(() => {
    const state = snapshot ? ` · ${STATE_LABEL[snapshot.state]}` : '';
    document.title = `${title}${state} — Tributary`;
  }, [snapshot, title]);

  return (
    <div className={`app${stale ? ' stale' : ''}`}>
      <header className="topbar">
        <span className="brand">
          <img src={iconUrl} alt="" width={24} height={24} />
          Tributary
        </span>
        {setUp ? (
          <nav aria-label="Views">
            {VIEWS.map((v) => (
              <a key={v.id} href={`#/${v.id}`} aria-current={view === v.id ? 'page' : undefined}>
                {v.title}
              </a>
            ))}
          </nav>
        ) : null}
      </header>
      <ConnectionBanner connection={connection} />
      <StateAnnouncer snapshot={snapshot} />
      <main>
        <h1 className="view-title">{title}</h1>
        {snapshot === null ? (
          <p className="loading" role="status">
            Waiting for the agent’s first report…
          </p>
        ) : (
          <fieldset className="view-frame" disabled={stale} data-testid="view-frame">
            {!setUp ? (
              <FirstRun snapshot={snapshot} send={bridge.command} />
            ) : view === 'wallet' ? (
              <Wallet snapshot={snapshot} send={bridge.command} ledgerCsvUrl={bridge.ledgerCsvUrl} />
            ) : view === 'settings' ? (
              <Settings settings={snapshot.settings} send={bridge.command} />
            ) : (
              <Dashboard snapshot={snapshot} send={bridge.command} />
            )}
          </fieldset>
        )}
      </main>
    </div>
  );
}
