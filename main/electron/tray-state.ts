import type { AgentSnapshot } from '../../shared/dashboard/contract.js';

export type TrayIcon = 'running' | 'paused' | 'waiting' | 'error';

export interface TrayState {
  icon: TrayIcon;
  /** The tray tooltip: the state and its reason, short enough for every OS (Windows cuts at 127 chars). */
  tooltip: string;
  /** Whether the menu offers "Resume" (user pause) rather than the pause entries. */
  canResume: boolean;
}

const MAX_TOOLTIP = 120;

function clip(text: string): string {
  return text.length <= MAX_TOOLTIP ? text : `${text.slice(0, MAX_TOOLTIP - 1)}…`;
}

/** What the tray shows for a snapshot, or for an agent that failed (`error` is its message). */
export function trayStateFor(snapshot: AgentSnapshot | null, error: string | null = null): TrayState {
  if (error !== null) return { icon: 'error', tooltip: clip(`Tributary: ${error}`), canResume: false };
  if (snapshot === null) return { icon: 'waiting', tooltip: 'Tributary: starting…', canResume: false };
  return {
    icon: snapshot.state,
    tooltip: clip(`Tributary: ${snapshot.reason}`),
    canResume: snapshot.reasonCode === 'user-paused',
  };
}

export function trayIconFile(icon: TrayIcon, platform: NodeJS.Platform): string {
  // macOS menu bars want 16 pt images with an @2x twin; others take 32 px and scale.
  return platform === 'darwin' ? `tray-${icon}-16.png` : `tray-${icon}-32.png`;
}
