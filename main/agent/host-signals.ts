import { execFile } from 'node:child_process';
import { readdir, readFile } from 'node:fs/promises';
import si from 'systeminformation';

/** Process names (no paths): from /proc on Linux, else `ps` or `tasklist`, all read asynchronously. */
export function listProcessNames(): Promise<string[]> {
  if (process.platform === 'linux') return linuxProcessNames();
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

/**
 * The kernel's `comm` is cut to 15 characters and renamed by some runtimes (Node 24 shows its main thread as
 * "MainThread"), so each process also counts under the file name it was started as (argv[0] in cmdline).
 */
async function linuxProcessNames(): Promise<string[]> {
  const read = (path: string): Promise<string> => readFile(path, 'utf8').catch(() => '');
  const pids = (await readdir('/proc').catch(() => [])).filter((entry) => /^\d+$/.test(entry));
  const perProcess = await Promise.all(
    pids.map(async (pid) => {
      const [comm, cmdline] = await Promise.all([read(`/proc/${pid}/comm`), read(`/proc/${pid}/cmdline`)]);
      return [comm.trim(), cmdline.split('\0')[0]!.split('/').pop()!.trim()];
    }),
  );
  return [...new Set(perProcess.flat().filter((name) => name.length > 0))];
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
