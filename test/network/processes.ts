import { spawn, type ChildProcess } from 'node:child_process';
import { createInterface } from 'node:readline';
import { repoRoot } from './helpers.js';

/** A `tributary` CLI child process whose pino JSON log lines are parsed as they arrive. */
export class CliProcess {
  readonly proc: ChildProcess;
  readonly lines: Array<Record<string, unknown>> = [];
  /** Every stdout line, log or not. */
  readonly output: string[] = [];
  readonly exited: Promise<number | null>;

  constructor(args: string[]) {
    this.proc = spawn(process.execPath, ['--import', 'tsx', 'main/cli/index.ts', ...args], {
      cwd: repoRoot,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    createInterface({ input: this.proc.stdout! }).on('line', (line) => {
      this.output.push(line);
      try {
        this.lines.push(JSON.parse(line) as Record<string, unknown>);
      } catch {
        // Not a log line (e.g. dawn's warnings).
      }
    });
    this.proc.stderr!.resume();
    this.exited = new Promise((resolve) => this.proc.once('exit', (code) => resolve(code)));
  }

  kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<number | null> {
    this.proc.kill(signal);
    return this.exited;
  }

  /** Receipts this node logged, by receipt id. */
  receipts(): Map<string, number> {
    const out = new Map<string, number>();
    for (const l of this.lines) if (l.msg === 'receipt') out.set(l.receiptId as string, l.flops as number);
    return out;
  }

  nodeId(): string | undefined {
    return this.lines.find((l) => l.msg === 'starting node')?.nodeId as string | undefined;
  }
}

export function spawnNode(url: string, keyPath: string, engine = 'gpu'): CliProcess {
  const agentFlags = ['--run-when', 'always', '--data-dir', `${keyPath}.d`, '--no-dashboard'];
  return new CliProcess([
    'node',
    '--coordinator',
    url,
    '--engine',
    engine,
    '--key',
    keyPath,
    ...agentFlags,
    '--log-level',
    'debug',
  ]);
}

export async function until(
  what: string,
  check: () => boolean | Promise<boolean>,
  timeoutMs = 90_000,
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
