/** The parts of electron-updater's AppUpdater used; tests pass a fake. */
export interface UpdaterLike {
  autoDownload: boolean;
  autoInstallOnAppQuit: boolean;
  allowDowngrade: boolean;
  allowPrerelease: boolean;
  on(event: 'update-downloaded', listener: (info: { version: string }) => void): unknown;
  on(event: 'error', listener: (error: Error) => void): unknown;
  checkForUpdates(): Promise<unknown>;
}

export interface UpdaterHooks {
  /** An update is downloaded and verified; it installs when the app quits (after the agent has stopped). */
  onReady(version: string): void;
  log(message: string): void;
  setInterval(callback: () => void, ms: number): { unref?(): void };
}

export const UPDATE_CHECK_INTERVAL_MS = 6 * 60 * 60 * 1000;

/**
 * Background updates. electron-updater checks each download against the sha512 in the feed's latest.yml
 * (and on Windows the publisher's signature) before it will install; nothing here switches that off. The app
 * is never restarted under the contributor: the update installs on the next quit, which first lets the agent
 * finish or hand back its micro-batch and flush the ledger.
 */
export function wireUpdater(updater: UpdaterLike, hooks: UpdaterHooks): void {
  updater.autoDownload = true;
  updater.autoInstallOnAppQuit = true;
  updater.allowDowngrade = false;
  updater.allowPrerelease = false;
  updater.on('update-downloaded', (info) => hooks.onReady(info.version));
  // An offline machine or an unconfigured feed is routine: log it, keep running, try again later.
  updater.on('error', (error) => hooks.log(`update check failed: ${error.message}`));
  const check = (): void => {
    updater.checkForUpdates().catch((error: unknown) => hooks.log(`update check failed: ${String(error)}`));
  };
  check();
  hooks.setInterval(check, UPDATE_CHECK_INTERVAL_MS).unref?.();
}
