import { readFileSync } from 'node:fs';
import type { Command } from 'commander';
import { pino } from 'pino';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';
import { FileKeyStore, loadOrCreateKeys } from '../identity/key-store.js';
import { NodeRuntime } from '../node/runtime.js';
import { defaultNodeKeyPath, engineKind, logLevel } from './options.js';

interface NodeFlags {
  coordinator: string;
  engine: 'gpu' | 'cpu';
  key: string;
  coordinatorKey?: string;
  ca?: string;
  logLevel: string;
}

export function registerNodeCommand(program: Command): void {
  program
    .command('node')
    .description('contribute this machine to a training run')
    .requiredOption('--coordinator <url>', 'ws:// or wss:// URL of the coordinator')
    .option('--engine <kind>', 'gpu (WebGPU on dawn.node) or cpu (reference, slow)', engineKind, 'gpu')
    .option('--key <file>', 'node identity key (created with mode 0600 when missing)', defaultNodeKeyPath())
    .option('--coordinator-key <hex>', 'refuse a coordinator whose public key differs')
    .option('--ca <pem>', 'trust this CA certificate for wss:// (e.g. a self-signed coordinator)')
    .option('--log-level <level>', 'pino log level', logLevel, 'info')
    .action(async (flags: NodeFlags) => {
      const log = pino({ name: 'node', level: flags.logLevel });
      const keys = loadOrCreateKeys(new FileKeyStore(flags.key));
      const ca = flags.ca ? readFileSync(flags.ca, 'utf8') : undefined;
      const node = new NodeRuntime({ coordinatorUrl: flags.coordinator, keys, engine: flags.engine, coordinatorKey: flags.coordinatorKey, ca, logger: log });
      let lastReason = '';
      node.on('status', (s: { reason: string }) => {
        if (s.reason !== lastReason) log.info({ reason: s.reason }, 'status');
        lastReason = s.reason;
      });
      node.on('receipt', (signed: SignedReceipt) =>
        log.debug({ receiptId: signed.receipt.receiptId, flops: signed.receipt.flops, total: node.status.creditedFlops }, 'receipt'),
      );
      log.info({ nodeId: keys.publicKeyHex, engine: flags.engine }, 'starting node');
      node.start();
      await new Promise<void>((resolve) => {
        const stop = (): void => void node.stop().then(resolve);
        process.once('SIGINT', stop);
        process.once('SIGTERM', stop);
      });
      log.info({ receipts: node.status.receipts, creditedFlops: node.status.creditedFlops }, 'node stopped');
    });
}
