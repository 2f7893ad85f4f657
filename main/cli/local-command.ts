import type { Command } from 'commander';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { pino } from 'pino';
import { Coordinator, type CoordinatorStatus, type StepEvent } from '../../coordinator/coordinator.js';
import { Corpus, defaultCorpusPath } from '../../coordinator/data.js';
import { loadRunConfig, parseRunConfig, type RunConfig } from '../../coordinator/run-config.js';
import { Ed25519Keys, verifyEd25519 } from '../identity/ed25519.js';
import { ShapedProxy, describeLink, unshaped, type LinkShape } from '../node/link-shaping.js';
import { NodeRuntime } from '../node/runtime.js';
import { engineLabel } from './adapter.js';
import { dataPlane, engineKind, integer, linkShape, logLevel, UsageError, usage } from './options.js';

interface LocalFlags {
  nodes: number;
  stages?: number;
  steps?: number;
  corpus?: string;
  config?: string;
  engine: 'gpu' | 'cpu';
  dataDir?: string;
  logLevel: string;
  link: LinkShape;
  dataPlane?: 'relay' | 'p2p';
}

/** The run.json (or the built-in tiny run) with the flags on top; 30 steps when neither names a number. */
function localRunConfig(flags: LocalFlags): RunConfig {
  const base = usage(() => loadRunConfig(flags.config));
  const config = usage(() =>
    parseRunConfig({
      ...base,
      stages: flags.stages ?? base.stages,
      steps: flags.steps ?? (flags.config ? base.steps : 30),
      dataPlane: flags.dataPlane ?? base.dataPlane,
      runId: base.runId === 'tributary-tiny' ? 'local' : base.runId,
      // Without a run.json, hold out the corpus tail and validate every 10 steps and at the end.
      validation: flags.config ? base.validation : { ...base.validation, every: 10 },
    }),
  );
  // Every stage needs a node of its own: with fewer, the run would wait forever.
  if (flags.nodes < config.stages) {
    throw new UsageError(
      `a run with ${config.stages} stages needs at least ${config.stages} nodes, one per stage, and --nodes is ` +
        `${flags.nodes}: use --nodes ${config.stages} or --stages ${flags.nodes}`,
    );
  }
  return config;
}

function progressLine(e: StepEvent, steps: number): string {
  return `step ${String(e.step).padStart(String(steps).length)}/${steps}  loss ${e.loss.toFixed(4)}  ${e.tokensPerSecond.toFixed(0)} tok/s  nodes per stage [${e.stageNodes.join(', ')}]${e.attempts > 1 ? `  (replayed ${e.attempts - 1}x)` : ''}`;
}

/**
 * First, final and best training loss (the final step's alone says little on a noisy curve), and the held-out
 * validation loss when the run measured one.
 */
function lossSummary(
  losses: Array<{ step: number; loss: number }>,
  validation: CoordinatorStatus['validation'],
): string {
  if (losses.length === 0) return 'loss: no step finished';
  const best = losses.reduce((a, b) => (b.loss < a.loss ? b : a));
  const held = validation
    ? `; validation ${validation.loss.toFixed(4)} after step ${validation.step}, best ${validation.best.toFixed(4)}`
    : '';
  return `loss: first ${losses[0]!.loss.toFixed(4)}, final ${losses.at(-1)!.loss.toFixed(4)}, best ${best.loss.toFixed(4)} (step ${best.step + 1})${held}`;
}

export function registerLocalCommand(program: Command): void {
  program
    .command('local')
    .description('train a small model with a coordinator and nodes on this machine (the embedded default)')
    .option('--nodes <n>', 'contributor nodes to start (at least one per stage)', integer(1, 64), 4)
    .option('--stages <n>', "pipeline stages (default: the config's, else 2)", integer(1, 64))
    .option('--steps <n>', "global steps to train (default: the config's, else 30)", integer(1))
    .option(
      '--corpus <file>',
      'training text (default: tinyshakespeare next to the repo, else a built-in text)',
    )
    .option('--config <run.json>', 'run config; --stages and --steps override it')
    .option('--engine <kind>', 'gpu (WebGPU on dawn.node) or cpu', engineKind, 'gpu')
    .option(
      '--data-dir <dir>',
      'where the database and checkpoints go (default: a temp dir, removed on exit)',
    )
    .option(
      '--link <rate,delay>',
      'shape every connection like a home link: rate and one-way delay, e.g. 80mbit,40ms',
      linkShape,
      unshaped,
    )
    .option(
      '--data-plane <relay|p2p>',
      "where activations and gradients go: through the coordinator (relay) or between the nodes over libp2p (p2p); default: the config's, else relay",
      dataPlane,
    )
    .option('--log-level <level>', 'pino log level for coordinator and nodes', logLevel, 'warn')
    .action(async (flags: LocalFlags) => {
      const log = pino({ level: flags.logLevel });
      const config = localRunConfig(flags);
      const corpusPath = flags.corpus ?? defaultCorpusPath();
      const corpus = usage(() => Corpus.fromFile(corpusPath), `cannot read --corpus ${corpusPath}`);
      const engine = await engineLabel(flags.engine);
      const temporary = flags.dataDir === undefined;
      const dataDir = resolve(flags.dataDir ?? mkdtempSync(join(tmpdir(), 'tributary-local-')));
      // A second Ctrl-C while nodes hand back their work stops at once, still without leaving the temp dir.
      let interrupts = 0;
      const interrupted = new Promise<void>((resolveInterrupt) =>
        process.on('SIGINT', () => {
          if (++interrupts === 1) return resolveInterrupt();
          if (temporary) rmSync(dataDir, { recursive: true, force: true });
          process.exit(130);
        }),
      );
      try {
        const coordinator = await Coordinator.start({
          config,
          corpus,
          dataDir,
          keys: Ed25519Keys.generate(),
          verify: verifyEd25519,
          logger: log.child({ name: 'coordinator' }),
          // Peer to peer, a node no neighbour can dial is reached through the coordinator's relay.
          p2pRelay: ['/ip4/127.0.0.1/tcp/0'],
        });
        // Nodes dial the coordinator through the shaper; each connection gets a link of its own.
        const shaper =
          flags.link === unshaped ? null : await ShapedProxy.start({ port: coordinator.port }, flags.link);
        const coordinatorUrl = shaper ? `ws://127.0.0.1:${shaper.port}` : coordinator.url;
        const m = config.model;
        console.log(
          `tributary local: ${flags.nodes} nodes, ${config.stages} stages, ${config.steps} steps on ${engine}`,
        );
        console.log(
          `model: ${m.layers} layers, width ${m.width}, ${m.heads} heads, context ${m.contextLength}; micro-batch ${config.microBatch.batch}x${config.microBatch.seq}, ${config.microBatchesPerStep} per step`,
        );
        console.log(
          `link:   ${describeLink(flags.link)}; tensors ${config.dataPlane === 'p2p' ? 'peer to peer over libp2p' : 'relayed by the coordinator'}\ncorpus: ${corpusPath}\ndata:   ${dataDir}${temporary ? ' (removed on exit; --data-dir keeps it)' : ''}\nstatus: ${coordinator.url.replace(/^ws/, 'http')}/status`,
        );
        const nodes = Array.from({ length: flags.nodes }, (_, i) => {
          const node = new NodeRuntime({
            coordinatorUrl,
            keys: Ed25519Keys.generate(),
            engine: flags.engine,
            logger: log.child({ name: `node${i}` }),
            // Peer to peer, each node's libp2p host sits behind a link of the same shape.
            p2pLink: flags.link,
          });
          node.start();
          return node;
        });
        let waiting = '';
        const poll = setInterval(() => {
          const s = coordinator.status();
          if (s.state === 'waiting' && s.reason !== waiting) console.log(s.reason);
          waiting = s.state === 'waiting' ? s.reason : '';
        }, 1000);
        coordinator.on('step', (e: StepEvent) => console.log(progressLine(e, config.steps)));
        coordinator.on('validation', (v: { step: number; loss: number }) =>
          console.log(`validation after step ${v.step}: held-out loss ${v.loss.toFixed(4)}`),
        );
        const started = Date.now();
        await Promise.race([coordinator.finished, interrupted]);
        clearInterval(poll);
        const status = coordinator.status();
        const balances = coordinator.store.balances();
        const losses = coordinator.store.losses();
        const peerBytes = nodes.reduce((sum, n) => sum + (n.status.peerBytes ?? 0), 0);
        await Promise.all(nodes.map((n) => n.stop()));
        await coordinator.close();
        await shaper?.close();
        console.log(
          `\nsummary: ${status.step} steps in ${((Date.now() - started) / 1000).toFixed(1)} s, ${status.tokens} tokens, ${status.tokensPerSecond.toFixed(0)} tok/s`,
        );
        console.log(lossSummary(losses, status.validation));
        console.log(
          `relayed ${(status.relayedBytes / 1e6).toFixed(2)} MB between stages${config.dataPlane === 'p2p' ? `, ${(peerBytes / 1e6).toFixed(2)} MB peer to peer${relayedPairs(status.relayedPairs)}` : ''}; ${status.receipts} receipts signed`,
        );
        for (const b of balances)
          console.log(
            `  node ${b.nodeId.slice(0, 12)}  ${b.units} units  ${(b.flops / 1e9).toFixed(3)} GFLOP`,
          );
      } finally {
        if (temporary) rmSync(dataDir, { recursive: true, force: true });
      }
    });
}

/** Pairs that could not (or would not) exchange tensors peer to peer: said in the summary, not hidden. */
function relayedPairs(count: number): string {
  if (count === 0) return '';
  return ` (${count} node pair${count === 1 ? '' : 's'} relayed by the coordinator: unreachable or disputed)`;
}
