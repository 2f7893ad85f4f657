import type { MenuItemConstructorOptions } from 'electron';
import type { PauseDuration } from '../../shared/dashboard/contract.js';
import type { TrayState } from './tray-state.js';

export interface TrayActions {
  open(): void;
  pause(duration: PauseDuration): void;
  resume(): void;
  setStartAtLogin(enabled: boolean): void;
  quit(): void;
}

export interface TrayMenuOptions {
  startAtLogin: boolean;
  /** Version of a downloaded, verified update; it installs on quit. */
  updateReady: string | null;
}

/** The tray menu: the state in words, pause/resume, the window, start at login, quit. */
export function trayMenuTemplate(
  state: TrayState,
  options: TrayMenuOptions,
  actions: TrayActions,
): MenuItemConstructorOptions[] {
  const control: MenuItemConstructorOptions[] = state.canResume
    ? [{ label: 'Resume', click: () => actions.resume() }]
    : [
        { label: 'Pause for 1 hour', click: () => actions.pause('1h') },
        { label: 'Pause until tomorrow', click: () => actions.pause('tomorrow') },
        { label: 'Pause until I resume', click: () => actions.pause('indefinitely') },
      ];
  return [
    { label: state.tooltip.replace(/^Tributary: /, ''), enabled: false },
    { type: 'separator' },
    { label: 'Open Tributary', click: () => actions.open() },
    ...(state.icon === 'error' ? [] : control),
    { type: 'separator' },
    {
      label: 'Start at login',
      type: 'checkbox',
      checked: options.startAtLogin,
      click: (item) => actions.setStartAtLogin(item.checked),
    },
    ...(options.updateReady
      ? [{ label: `Quit and install update ${options.updateReady}`, click: () => actions.quit() }]
      : []),
    { label: 'Quit Tributary', click: () => actions.quit() },
  ];
}
