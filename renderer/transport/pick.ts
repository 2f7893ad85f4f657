import type { AgentBridge } from '../../shared/dashboard/contract.js';
import { fromPreloadBridge } from './ipc-bridge.js';
import type { UiBridge } from './types.js';
import { createWebSocketBridge } from './websocket-bridge.js';

declare global {
  interface Window {
    /** Set by the Electron preload only; absent in a browser. */
    tributary?: AgentBridge;
  }
}

const TOKEN_KEY = 'tributary.dashboardToken';

/**
 * The dashboard server prints a link with `?token=`. The token moves to sessionStorage and off the address bar
 * (so it does not end up in screenshots or history), and survives reloads of this tab.
 */
export function takeToken(location: Location, history: History, storage: Storage): string | null {
  const url = new URL(location.href);
  const fromUrl = url.searchParams.get('token');
  if (fromUrl) {
    storage.setItem(TOKEN_KEY, fromUrl);
    url.searchParams.delete('token');
    history.replaceState(history.state, '', url.pathname + url.search + url.hash);
    return fromUrl;
  }
  return storage.getItem(TOKEN_KEY);
}

/** The WebSocket of the server that served this page; the token rides along as the server expects. */
export function dashboardSocketUrl(location: Location, token: string | null): string {
  const url = new URL('ws', location.href);
  url.protocol = location.protocol === 'https:' ? 'wss:' : 'ws:';
  url.search = token ? `?token=${encodeURIComponent(token)}` : '';
  url.hash = '';
  return url.toString();
}

/** Electron window: the preload's IPC bridge. Browser: the dashboard server's WebSocket. */
export function pickBridge(win: Window): UiBridge {
  if (win.tributary) return fromPreloadBridge(win.tributary);
  const token = takeToken(win.location, win.history, win.sessionStorage);
  return createWebSocketBridge(dashboardSocketUrl(win.location, token));
}
