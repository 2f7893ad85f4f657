import { EventEmitter } from 'node:events';
import { describe, expect, it } from 'vitest';
import type { ThermalState } from '../../shared/dashboard/contract.js';
import {
  PowerSignalReader,
  type PowerMonitorLike,
  type PowerSignals,
} from '../../main/electron/power-signals.js';

/** Stands in for Electron's powerMonitor: the test sets what the OS would report and fires its events. */
class FakePowerMonitor extends EventEmitter implements PowerMonitorLike {
  idleSeconds = 0;
  idleState: 'active' | 'idle' | 'locked' | 'unknown' = 'active';
  onBattery = false;
  thermal: ThermalState = 'unknown';
  getSystemIdleTime = () => this.idleSeconds;
  getSystemIdleState = () => this.idleState;
  isOnBatteryPower = () => this.onBattery;
  getCurrentThermalState = () => this.thermal;
}

function setup() {
  const monitor = new FakePowerMonitor();
  const changes: PowerSignals[] = [];
  const reader = new PowerSignalReader(monitor, (s) => changes.push(s));
  return { monitor, changes, reader };
}

describe('power and idle signals', () => {
  it('reads input idleness, battery and thermal state as policy inputs', () => {
    const { monitor, reader } = setup();
    monitor.idleSeconds = 240;
    monitor.onBattery = true;
    monitor.thermal = 'serious';
    expect(reader.read()).toEqual({
      idleSeconds: 240,
      screenLocked: false,
      onBattery: true,
      thermalState: 'serious',
    });
  });

  it('tracks the lock screen from events (macOS, Windows) and from the idle state (Linux)', () => {
    const { monitor, reader, changes } = setup();
    monitor.emit('lock-screen');
    expect(changes.at(-1)?.screenLocked).toBe(true);
    monitor.emit('unlock-screen');
    expect(reader.read().screenLocked).toBe(false);
    monitor.idleState = 'locked';
    expect(reader.read().screenLocked).toBe(true);
    monitor.idleState = 'active';
    monitor.emit('lock-screen');
    monitor.emit('resume');
    expect(reader.read().screenLocked).toBe(false);
  });

  it('reports at once when the OS says power or heat changed', () => {
    const { monitor, changes } = setup();
    monitor.onBattery = true;
    monitor.emit('on-battery');
    expect(changes.at(-1)?.onBattery).toBe(true);
    monitor.thermal = 'critical';
    monitor.emit('thermal-state-change');
    expect(changes.at(-1)?.thermalState).toBe('critical');
    monitor.onBattery = false;
    monitor.emit('on-ac');
    expect(changes.at(-1)?.onBattery).toBe(false);
    expect(changes).toHaveLength(3);
  });

  it('treats an impossible idle reading as unknown, and lets go of the monitor on dispose', () => {
    const { monitor, reader } = setup();
    monitor.idleSeconds = -1;
    expect(reader.read().idleSeconds).toBeNull();
    reader.dispose();
    expect(monitor.eventNames()).toEqual([]);
  });
});
