import { execFile } from 'node:child_process';
import si from 'systeminformation';

/** Process names (no paths), via `ps` or `tasklist` run asynchronously. */
export function listProcessNames(): Promise<string[]> {
  const [cmd, args] =
    process.platform === 'win32' ? ['tasklist', ['/fo', 'csv', '/nh']] : ['ps', ['-A', '-o', 'comm=']];
  return new Promise((resolve) => {
    execFile(
      cmd,
      args as string[],
      { timeout: 10_000, maxBuffer: 8 * 1024 * 1024, windowsHide: true },
      (err, stdout) => {
        if (err) return resolve([]);
        resolve(parseProcessList(stdout, process.platform === 'win32'));
      },
    );
  });
}

export function parseProcessList(stdout: string, windowsCsv: boolean): string[] {
  const names = stdout
    .split(/\r?\n/)
    .map((line) => (windowsCsv ? (/^"([^"]+)"/.exec(line)?.[1] ?? '') : (line.trim().split('/').pop() ?? '')))
    .filter((name) => name.length > 0);
  return [...new Set(names)];
}

/** Whether the machine runs on battery now; false where it has none or cannot tell. */
export async function readOnBattery(): Promise<boolean> {
  const battery = await si.battery().catch(() => null);
  return battery !== null && battery.hasBattery && !battery.acConnected;
}
