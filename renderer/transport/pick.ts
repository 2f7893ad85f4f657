import type { AgentBridge } from '../../shared/dashboard/contract.js';
import { fromPreloadBridge } from './ipc-bridge.js';
import type { UiBridge } from './types.js';
import { browserSocketEnvironment, createWebSocketBridge } from './websocket-bridge.js';

declare global {
  interface Window {
    /** Set by the Electron preload only; absent in a browser. */
    tributary?: AgentBridge;
  }
}

/**
 * The WebSocket of the server that served this page. The server trades the link's `?token=` for a cookie
 * (which the socket then carries); a token still in the address bar is passed on and removed from it.
 */
export function dashboardSocketUrl(location: Location, history: History): string {
  const page = new URL(location.href);
  const token = page.searchParams.get('token');
  if (token) {
    page.searchParams.delete('token');
    history.replaceState(history.state, '', page.pathname + page.search + page.hash);
  }
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = token ? `?token=${encodeURIComponent(token)}` : '';
  url.hash = '';
  return url.toString();
}

/** Electron window: the preload's IPC bridge. Browser: the dashboard server's WebSocket. */
export function pickBridge(win: Window): UiBridge {
  if (win.tributary) return fromPreloadBridge(win.tributary);
  return createWebSocketBridge(
    dashboardSocketUrl(win.location, win.history),
    browserSocketEnvironment(win.location),
    new URL('api/ledger.csv?table=receipts', win.location.href).toString(),
  );
}
