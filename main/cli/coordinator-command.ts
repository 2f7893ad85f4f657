import { multiaddr } from '@multiformats/multiaddr';
import type { Command } from 'commander';
import { readFileSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { pino } from 'pino';
import { Coordinator } from '../../coordinator/coordinator.js';
import { Corpus, defaultCorpusPath } from '../../coordinator/data.js';
import { loadRunConfig } from '../../coordinator/run-config.js';
import { verifyEd25519 } from '../identity/ed25519.js';
import { FileKeyStore, loadOrCreateKeys } from '../identity/key-store.js';
import { integer, logLevel, usage, UsageError } from './options.js';

interface CoordinatorFlags {
  port: number;
  host: string;
  db: string;
  config?: string;
  corpus?: string;
  cert?: string;
  key?: string;
  identity?: string;
  p2pRelay?: string;
  logLevel: string;
}

export function registerCoordinatorCommand(program: Command): void {
  program
    .command('coordinator')
    .description('run the network coordinator of a training run')
    .option('--port <n>', 'port for WebSocket, /status and /metrics', integer(0, 65535), 7700)
    .option('--host <addr>', 'address to listen on', '127.0.0.1')
    .option(
      '--db <file>',
      'SQLite database; checkpoints go next to it',
      'tributary-coordinator/coordinator.db',
    )
    .option(
      '--config <run.json>',
      'run config (model, stages, micro-batches, AdamW, seed); defaults to a tiny model',
    )
    .option('--corpus <file>', 'training text (byte-level tokens)')
    .option('--cert <pem>', 'TLS certificate: serve wss:// (needs --key)')
    .option('--key <pem>', 'TLS private key')
    .option('--identity <file>', 'coordinator signing key (created when missing)', undefined)
    .option(
      '--p2p-relay <multiaddr>',
      "peer-to-peer runs: serve circuit relay v2 there for the run's nodes (e.g. /ip4/0.0.0.0/tcp/7701)",
    )
    .option('--log-level <level>', 'pino log level', logLevel, 'info')
    .action(async (flags: CoordinatorFlags) => {
      if (Boolean(flags.cert) !== Boolean(flags.key)) throw new UsageError('--cert and --key go together');
      const log = pino({ name: 'coordinator', level: flags.logLevel });
      // What the flags name is read before anything is created: a wrong path exits 2 and leaves nothing.
      const config = usage(() => loadRunConfig(flags.config));
      if (flags.p2pRelay !== undefined) {
        if (config.dataPlane !== 'p2p')
          throw new UsageError('--p2p-relay serves a run whose config says "dataPlane": "p2p"');
        usage(() => multiaddr(flags.p2pRelay!), `--p2p-relay ${flags.p2pRelay} is not a multiaddr`);
      }
      const dataDir = dirname(resolve(flags.db));
      const corpusPath = flags.corpus ?? defaultCorpusPath();
      const corpus = usage(() => Corpus.fromFile(corpusPath), `cannot read --corpus ${corpusPath}`);
      const tls =
        flags.cert && flags.key
          ? {
              cert: usage(() => readFileSync(flags.cert!, 'utf8'), `cannot read --cert ${flags.cert}`),
              key: usage(() => readFileSync(flags.key!, 'utf8'), `cannot read --key ${flags.key}`),
            }
          : undefined;
      const identity = flags.identity ?? resolve(dataDir, 'coordinator.key');
      const keys = usage(
        () => loadOrCreateKeys(new FileKeyStore(identity)),
        `cannot use --identity ${identity}`,
      );
      const coordinator = await Coordinator.start({
        config,
        corpus,
        dataDir,
        dbPath: resolve(flags.db),
        keys,
        verify: verifyEd25519,
        host: flags.host,
        port: flags.port,
        tls,
        logger: log,
        ...(flags.p2pRelay ? { p2pRelay: [flags.p2pRelay] } : {}),
      });
      log.info(
        { url: coordinator.url, corpus: corpusPath, publicKey: coordinator.publicKey },
        'ready; nodes connect with: tributary node --coordinator <url>',
      );
      const stop = (): void => void coordinator.close().then(() => process.exit(0));
      process.once('SIGINT', stop);
      process.once('SIGTERM', stop);
      await coordinator.finished;
      log.info(coordinator.status(), 'run finished; still serving status and receipts (Ctrl-C to stop)');
    });
}
