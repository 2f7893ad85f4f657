import type { ThermalState } from '../../shared/dashboard/contract.js';
import type { PolicyInputs } from '../agent/policy.js';

type PowerEvent =
  'lock-screen' | 'unlock-screen' | 'on-battery' | 'on-ac' | 'thermal-state-change' | 'suspend' | 'resume';

/** The parts of Electron's powerMonitor the shell reads; tests pass a fake. */
export interface PowerMonitorLike {
  getSystemIdleTime(): number;
  getSystemIdleState(idleThreshold: number): 'active' | 'idle' | 'locked' | 'unknown';
  isOnBatteryPower(): boolean;
  getCurrentThermalState(): ThermalState;
  on(event: PowerEvent, listener: () => void): unknown;
  removeListener(event: PowerEvent, listener: () => void): unknown;
}

export type PowerSignals = Pick<PolicyInputs, 'idleSeconds' | 'screenLocked' | 'onBattery' | 'thermalState'>;

/**
 * Turns the OS's power and input signals into the agent's policy inputs. Input idleness is measured, not
 * guessed from the display (Folding@home's "idle = display off" confused people). The lock screen comes from
 * events on macOS and Windows and from the idle state on Linux, where those events do not exist.
 */
export class PowerSignalReader {
  private lockedByEvent = false;
  private readonly subscriptions: [PowerEvent, () => void][] = [];

  constructor(
    private readonly monitor: PowerMonitorLike,
    /** Called at once when an OS event changes the inputs, so the policy need not wait for its next poll. */
    private readonly onChange: (signals: PowerSignals) => void,
  ) {
    this.listen('lock-screen', () => (this.lockedByEvent = true));
    this.listen('unlock-screen', () => (this.lockedByEvent = false));
    this.listen('resume', () => (this.lockedByEvent = false));
    // These only need a fresh reading, which listen() takes after every event.
    for (const event of ['on-battery', 'on-ac', 'thermal-state-change'] as const)
      this.listen(event, () => undefined);
  }

  private listen(event: PowerEvent, update: () => void): void {
    const listener = (): void => {
      update();
      this.onChange(this.read());
    };
    this.monitor.on(event, listener);
    this.subscriptions.push([event, listener]);
  }

  read(): PowerSignals {
    const idleSeconds = this.monitor.getSystemIdleTime();
    return {
      idleSeconds: Number.isFinite(idleSeconds) && idleSeconds >= 0 ? idleSeconds : null,
      screenLocked: this.lockedByEvent || this.monitor.getSystemIdleState(1) === 'locked',
      onBattery: this.monitor.isOnBatteryPower(),
      thermalState: this.monitor.getCurrentThermalState(),
    };
  }

  dispose(): void {
    for (const [event, listener] of this.subscriptions) this.monitor.removeListener(event, listener);
    this.subscriptions.length = 0;
  }
}
