/** The parts of Electron's powerMonitor and a window's events the lifecycle needs; tests pass fakes. */
export interface LifecycleEvents {
  on(event: 'suspend', listener: () => void): unknown;
  on(event: 'resume', listener: () => void): unknown;
  /** Linux and macOS; Electron passes an event whose preventDefault() delays the shutdown (its types omit it). */
  on(event: 'shutdown', listener: (event?: { preventDefault(): void }) => void): unknown;
}

export interface LifecycleHost {
  suspend(): Promise<void>;
  resume(): Promise<void>;
}

/**
 * What the desktop app does around the machine's own lifecycle: before it sleeps, hand the micro-batch in
 * flight back (so the network replays it elsewhere instead of waiting for a machine that is asleep); after
 * it wakes, reconnect; on shutdown and on Windows' session end, quit through the normal path, which flushes
 * the ledger and hands work back before the process exits.
 */
export function wireLifecycle(
  power: LifecycleEvents,
  host: LifecycleHost,
  quit: () => void,
  log: (message: string) => void,
): { sessionEnded: () => void } {
  power.on('suspend', () => {
    log('the computer is going to sleep: handing work back');
    void host.suspend();
  });
  power.on('resume', () => {
    log('the computer woke up: reconnecting');
    void host.resume();
  });
  power.on('shutdown', (event) => {
    // Linux and macOS let the app delay the shutdown until it has quit cleanly.
    event?.preventDefault();
    log('the system is shutting down: flushing and quitting');
    quit();
  });
  return {
    /** Windows' WM_ENDSESSION, which Electron reports on each window as 'session-end'. */
    sessionEnded: () => {
      log('the Windows session is ending: flushing and quitting');
      quit();
    },
  };
}
