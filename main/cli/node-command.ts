import { InvalidArgumentError, type Command } from 'commander';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import { resolve } from 'node:path';
import { pino } from 'pino';
import type { AgentSettings } from '../../shared/dashboard/settings.js';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';
import { agentPaths, defaultDataDir } from '../agent/paths.js';
import { layerSettings, loadSettings, SettingsFileError } from '../agent/settings-store.js';
import { ContributorHost } from '../host/contributor-host.js';
import { FileKeyStore, loadOrCreateKeys } from '../identity/key-store.js';
import { coordinatorUrl, engineKind, integer, logLevel, nodeKeyPath, UsageError } from './options.js';
import { engineLabel } from './adapter.js';
import { statusLine } from './status-line.js';

interface NodeFlags {
  coordinator: string;
  engine: 'gpu' | 'cpu';
  key?: string;
  coordinatorKey?: string;
  ca?: string;
  dataDir: string;
  freshLedger?: boolean;
  settings?: string;
  runWhen?: 'idle' | 'always';
  dutyCycle?: number;
  tempLimit?: number;
  vramCap?: number;
  dashboard: boolean;
  dashboardPort?: number;
  logLevel: string;
}

function runWhen(value: string): 'idle' | 'always' {
  if (value !== 'idle' && value !== 'always') throw new InvalidArgumentError('expected idle or always');
  return value;
}

/** A file named on the command line; one that cannot be read is bad usage (exit 2), not a failure. */
async function readFlagFile(flag: string, path: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    throw new UsageError(`cannot read ${flag} ${path}: ${(err as Error).message}`);
  }
}

/**
 * Settings from the data dir (or --settings) and, separately, the flags that override them for this run only,
 * validated as a whole. The dashboard saves the stored layer only.
 */
async function resolveSettings(
  flags: NodeFlags,
): Promise<{ stored: AgentSettings; overrides: Partial<AgentSettings>; effective: AgentSettings }> {
  let stored: AgentSettings;
  try {
    stored = flags.settings
      ? await loadSettings(resolve(flags.settings), { mustExist: true })
      : await loadSettings(agentPaths(flags.dataDir).settings);
  } catch (err) {
    throw err instanceof SettingsFileError ? new UsageError(err.message) : err;
  }
  const overrides: Partial<AgentSettings> = {
    ...(flags.runWhen !== undefined && { runWhen: flags.runWhen }),
    ...(flags.dutyCycle !== undefined && { dutyCyclePct: flags.dutyCycle }),
    ...(flags.tempLimit !== undefined && { gpuTempLimitC: flags.tempLimit }),
    ...(flags.vramCap !== undefined && { vramCapMb: flags.vramCap }),
    ...(flags.dashboardPort !== undefined && { dashboardPort: flags.dashboardPort }),
  };
  const layered = layerSettings(stored, overrides);
  if (!layered.ok) throw new UsageError(`invalid settings:\n  ${layered.errors.join('\n  ')}`);
  return layered.settings;
}

async function prepareDataDir(dir: string): Promise<void> {
  try {
    await mkdir(dir, { recursive: true, mode: 0o700 });
  } catch (err) {
    throw new UsageError(`cannot use --data-dir ${dir}: ${(err as Error).message}`);
  }
}

function loadKeys(path: string): ReturnType<typeof loadOrCreateKeys> {
  try {
    return loadOrCreateKeys(new FileKeyStore(path));
  } catch (err) {
    throw new UsageError(`cannot use the node key ${path}: ${(err as Error).message}`);
  }
}

/** The renderer bundle: beside the compiled CLI in dist/, or in dist/ when running from the sources. */
function webBundleDir(): string | null {
  const candidates = [
    resolve(import.meta.dirname, '..', '..', 'web'),
    resolve(import.meta.dirname, '..', '..', 'dist', 'web'),
  ];
  return candidates.find((d) => existsSync(resolve(d, 'index.html'))) ?? null;
}

export function registerNodeCommand(program: Command): void {
  program
    .command('node')
    .description('contribute this machine to a training run, within the limits you set')
    .requiredOption('--coordinator <url>', 'ws:// or wss:// URL of the coordinator', coordinatorUrl)
    .option('--engine <kind>', 'gpu (WebGPU on dawn.node) or cpu (reference, slow)', engineKind, 'gpu')
    .option(
      '--key <file>',
      'node identity key, created with mode 0600 when missing (default: node.key in the data dir)',
    )
    .option(
      '--coordinator-key <hex>',
      "pin the coordinator's public key (default: the key it shows first is pinned in the data dir)",
    )
    .option('--ca <pem-file>', 'extra CA certificate for a wss:// coordinator with a private certificate')
    .option('--data-dir <dir>', 'node key, ledger, settings and dashboard token', defaultDataDir())
    .option('--fresh-ledger', 'set an empty, truncated or cut-short ledger aside and start a new one')
    .option('--settings <file>', 'settings JSON (default: settings.json in the data dir, else the defaults)')
    .option(
      '--run-when <when>',
      'idle: only after the idle time without input; always: headless boxes',
      runWhen,
    )
    .option('--duty-cycle <pct>', 'most of the time the GPU may be busy, in percent', integer(5, 100))
    .option('--temp-limit <celsius>', 'GPU temperature limit', integer(40, 100))
    .option('--vram-cap <mb>', 'most GPU memory the stage may use', integer(128))
    .option(
      '--dashboard-port <port>',
      'local dashboard port on 127.0.0.1 (0 picks a free one)',
      integer(0, 65_535),
    )
    .option('--no-dashboard', 'do not serve the local dashboard')
    .option('--log-level <level>', 'pino log level (JSON lines on stdout)', logLevel, 'warn')
    .action(async (flags: NodeFlags) => {
      // Listen before anything starts: a signal that arrives first would otherwise kill the process unflushed.
      const stopSignal = new Promise<NodeJS.Signals>((done) => {
        process.once('SIGINT', () => done('SIGINT'));
        process.once('SIGTERM', () => done('SIGTERM'));
      });
      const log = pino({ name: 'node', level: flags.logLevel });
      // Everything a flag names is checked before the key, the ledger or a connection exists.
      const { stored, overrides, effective: settings } = await resolveSettings(flags);
      const ca = flags.ca ? await readFlagFile('--ca', flags.ca) : undefined;
      const engine = await engineLabel(flags.engine);
      await prepareDataDir(flags.dataDir);
      const keys = loadKeys(flags.key ?? nodeKeyPath(flags.dataDir));
      const host = await ContributorHost.start({
        dataDir: flags.dataDir,
        keys,
        engine: flags.engine,
        logger: log,
        network: { url: flags.coordinator, coordinatorKey: flags.coordinatorKey ?? null },
        settings: stored,
        overrides,
        ca,
        freshLedger: flags.freshLedger,
        dashboard: flags.dashboard ? { staticDir: webBundleDir(), port: settings.dashboardPort } : null,
      });
      const { agent } = host;
      console.log(`tributary node ${keys.publicKeyHex.slice(0, 16)}… → ${flags.coordinator} on ${engine}`);
      console.log(`ledger and settings: ${flags.dataDir}`);
      if (host.dashboard) console.log(`dashboard: ${host.dashboard.url}`);
      const line = statusLine(process.stdout);
      const render = (): void => {
        const node = host.currentNode;
        if (node) line.update(agent.snapshot(), node.status);
      };
      agent.onSnapshot(render);
      host.onNode((next) => {
        next?.on('status', render);
        next?.on('receipt', (signed: SignedReceipt) =>
          log.debug({ receiptId: signed.receipt.receiptId, flops: signed.receipt.flops }, 'receipt'),
        );
      });

      const signal = await stopSignal;
      line.finish(`${signal}: finishing or handing back the micro-batch in flight…`);
      const receipts = host.currentNode?.status.receipts ?? 0;
      const { confirmedFlops, pendingFlops } = agent.snapshot().wallet;
      // The runtime first: the unit in flight completes or goes back to the coordinator; then the ledger flushes.
      await host.stop();
      console.log(
        `stopped: ${receipts} receipts this session; ledger holds ${((confirmedFlops + pendingFlops) / 1e12).toFixed(3)} TFLOP`,
      );
    });
}
