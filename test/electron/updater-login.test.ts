import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import {
  HIDDEN_ARG,
  linuxAutostartEntry,
  loginItemSettings,
  startedHidden,
} from '../../main/electron/login-item.js';
import { UPDATE_CHECK_INTERVAL_MS, wireUpdater, type UpdaterLike } from '../../main/electron/updater.js';

/** Stands in for electron-updater's autoUpdater. */
class FakeUpdater extends EventEmitter implements UpdaterLike {
  autoDownload = false;
  autoInstallOnAppQuit = false;
  allowDowngrade = true;
  allowPrerelease = true;
  checks = 0;
  constructor(private readonly outcome: () => Promise<unknown>) {
    super();
  }
  checkForUpdates(): Promise<unknown> {
    this.checks += 1;
    return this.outcome();
  }
}

describe('updater wiring', () => {
  it('downloads in the background, installs only on quit, never downgrades, checks every 6 h', () => {
    const updater = new FakeUpdater(() => Promise.resolve(null));
    const timers: number[] = [];
    let tick: () => void = () => undefined;
    wireUpdater(updater, {
      onReady: () => undefined,
      log: () => undefined,
      setInterval: (callback, ms) => {
        timers.push(ms);
        tick = callback;
        return {};
      },
    });
    expect(updater).toMatchObject({
      autoDownload: true,
      autoInstallOnAppQuit: true,
      allowDowngrade: false,
      allowPrerelease: false,
    });
    expect(timers).toEqual([UPDATE_CHECK_INTERVAL_MS]);
    expect(updater.checks).toBe(1);
    tick();
    expect(updater.checks).toBe(2);
  });

  it('reports a verified download, and logs failures without throwing', async () => {
    const updater = new FakeUpdater(() =>
      Promise.reject(new Error('getaddrinfo ENOTFOUND updates.tributary.invalid')),
    );
    const ready: string[] = [];
    const logs: string[] = [];
    wireUpdater(updater, {
      onReady: (v) => ready.push(v),
      log: (m) => logs.push(m),
      setInterval: () => ({}),
    });
    await new Promise((r) => setImmediate(r));
    updater.emit('error', new Error('sha512 checksum mismatch'));
    updater.emit('update-downloaded', { version: '0.2.0' });
    expect(ready).toEqual(['0.2.0']);
    expect(logs).toEqual([
      expect.stringContaining('ENOTFOUND'),
      'update check failed: sha512 checksum mismatch',
    ]);
  });
});

describe('login item', () => {
  it('starts hidden in the tray', () => {
    expect(loginItemSettings(true)).toEqual({ openAtLogin: true, args: [HIDDEN_ARG] });
    expect(loginItemSettings(false).openAtLogin).toBe(false);
    expect(startedHidden(['/opt/Tributary/tributary', HIDDEN_ARG])).toBe(true);
    expect(startedHidden(['/opt/Tributary/tributary'])).toBe(false);
  });

  it('writes a Linux autostart entry with the executable quoted', () => {
    const entry = linuxAutostartEntry('/home/ann/Apps/Tributary "beta"/$HOME.AppImage');
    expect(entry).toContain('[Desktop Entry]');
    expect(entry).toContain('Exec="/home/ann/Apps/Tributary \\"beta\\"/\\$HOME.AppImage" --hidden');
  });
});
