import type { Settings } from 'electron';

/** Passed when the OS starts the app at login, so it goes straight to the tray without a window. */
export const HIDDEN_ARG = '--hidden';

/** Electron's own login item (macOS, Windows): start hidden, in the tray (the argument says so; Electron 45 dropped macOS's `openAsHidden`). */
export function loginItemSettings(enabled: boolean): Settings {
  return { openAtLogin: enabled, args: [HIDDEN_ARG] };
}

/**
 * Linux has no login-item API in Electron: an XDG autostart entry does the same. The path is quoted per the
 * Desktop Entry spec's Exec rules.
 */
export function linuxAutostartEntry(executable: string): string {
  const quoted = `"${executable.replace(/(["`$\\])/g, '\\$1')}"`;
  return [
    '[Desktop Entry]',
    'Type=Application',
    'Name=Tributary',
    'Comment=Lend your idle GPU to open AI training',
    `Exec=${quoted} ${HIDDEN_ARG}`,
    'X-GNOME-Autostart-enabled=true',
    'NoDisplay=true',
    '',
  ].join('\n');
}

export function startedHidden(argv: readonly string[]): boolean {
  return argv.includes(HIDDEN_ARG);
}
