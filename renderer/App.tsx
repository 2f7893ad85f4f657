import { useEffect, useState } from 'react';
import iconUrl from '../assets/icon.svg?url';
import { ConnectionBanner } from './components/ConnectionBanner.js';
import { STATE_LABEL } from './format.js';
import { useAgent } from './state/use-agent.js';
import type { UiBridge } from './transport/types.js';
import { Dashboard } from './views/Dashboard.js';
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

  useEffect(() => {
    document.title = snapshot ? `Tributary — ${STATE_LABEL[snapshot.state]}` : 'Tributary';
  }, [snapshot]);

  return (
    <div className="app">
      <header className="topbar">
        <span className="brand">
          <img src={iconUrl} alt="" width={24} height={24} />
          Tributary
        </span>
        <nav aria-label="Views">
          {VIEWS.map((v) => (
            <a key={v.id} href={`#/${v.id}`} aria-current={view === v.id ? 'page' : undefined}>
              {v.title}
            </a>
          ))}
        </nav>
      </header>
      <ConnectionBanner connection={connection} />
      <main>
        {snapshot === null ? (
          <p className="loading" role="status">
            Waiting for the agent’s first report…
          </p>
        ) : view === 'wallet' ? (
          <Wallet snapshot={snapshot} send={bridge.command} ledgerCsvUrl={bridge.ledgerCsvUrl} />
        ) : view === 'settings' ? (
          <Settings settings={snapshot.settings} send={bridge.command} />
        ) : (
          <Dashboard snapshot={snapshot} send={bridge.command} />
        )}
      </main>
    </div>
  );
}
