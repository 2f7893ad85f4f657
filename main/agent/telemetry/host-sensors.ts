import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { ThermalState } from './types.js';

/**
 * `pmset -g therm` on macOS prints the CPU speed limit the OS imposes under heat and any recorded thermal
 * warning; the lower the limit, the hotter the machine.
 */
export function parsePmsetTherm(output: string): ThermalState {
  const warning = /thermal warning level[^\n]*?(\d+)/i.exec(output);
  const speed = /CPU_Speed_Limit\s*=\s*(\d+)/.exec(output);
  const limit = speed ? Number(speed[1]) : null;
  if (limit !== null && limit < 50) return 'critical';
  if ((warning && Number(warning[1]) > 0) || (limit !== null && limit < 80)) return 'serious';
  if (limit !== null && limit < 100) return 'fair';
  if (limit !== null || /no thermal warning level/i.test(output)) return 'nominal';
  return 'unknown';
}

export function readMacThermalState(command = 'pmset'): Promise<ThermalState> {
  return new Promise((resolve) => {
    execFile(command, ['-g', 'therm'], { timeout: 5000, windowsHide: true }, (err, stdout) =>
      resolve(err ? 'unknown' : parsePmsetTherm(stdout)),
    );
  });
}

const CPU_ZONE = /x86_pkg_temp|cpu|soc|k10temp|coretemp|zenpower|tctl/i;

/** The CPU package temperature where Linux exposes one (thermal zones or hwmon); null elsewhere. */
export async function readCpuTempC(sysClass = '/sys/class'): Promise<number | null> {
  const zones = join(sysClass, 'thermal');
  for (const zone of (await readdir(zones).catch(() => [] as string[])).filter((z) =>
    z.startsWith('thermal_zone'),
  )) {
    const type = await readFile(join(zones, zone, 'type'), 'utf8').catch(() => '');
    if (!CPU_ZONE.test(type)) continue;
    const milli = Number((await readFile(join(zones, zone, 'temp'), 'utf8').catch(() => '')).trim());
    if (Number.isFinite(milli) && milli > 0) return milli / 1000;
  }
  const hwmons = join(sysClass, 'hwmon');
  for (const hwmon of await readdir(hwmons).catch(() => [] as string[])) {
    const name = await readFile(join(hwmons, hwmon, 'name'), 'utf8').catch(() => '');
    if (!CPU_ZONE.test(name)) continue;
    const milli = Number((await readFile(join(hwmons, hwmon, 'temp1_input'), 'utf8').catch(() => '')).trim());
    if (Number.isFinite(milli) && milli > 0) return milli / 1000;
  }
  return null;
}
