import { join } from 'node:path';
import type { Logger } from 'pino';
import type { AgentSettings } from '../../shared/dashboard/settings.js';
import type { EngineKind } from '../../shared/protocol/messages.js';
import { Agent, type AgentNetwork } from '../agent/agent.js';
import type { DashboardServer } from '../agent/dashboard/server.js';
import { offlineNetwork } from '../agent/combined-state.js';
import { followRun } from '../agent/follow-run.js';
import { agentPaths } from '../agent/paths.js';
import { FileCoordinatorPins } from '../identity/coordinator-pins.js';
import type { TelemetrySource } from '../agent/telemetry/types.js';
import { admitUnderCap } from '../agent/throttle/vram.js';
import { estimateStageMemoryBytes } from '../../gpu/engine/stage-layout.js';
import type { WorkUnit } from '../agent/ledger/ledger.js';
import { NodeRuntime, type NodeKeys, type NodeRuntimeOptions } from '../node/runtime.js';

export interface ContributorHostOptions {
  /** Ledger, settings, dashboard token (the CLI's --data-dir; the desktop app's app-data folder). */
  dataDir: string;
  keys: NodeKeys;
  engine: EngineKind;
  logger: Logger;
  /** A network given on the command line; without it the host follows the one accepted in settings. */
  network?: AgentNetwork;
  /** Settings as stored (default: settings.json in dataDir) and this run's flag overrides, never saved. */
  settings?: AgentSettings;
  overrides?: Partial<AgentSettings>;
  /** Extra CA for a wss:// coordinator with a private certificate. */
  ca?: string;
  /** How stages are built (the desktop app trains on its GPU worker page); default: a worker thread. */
  createStage?: NodeRuntimeOptions['createStage'];
  /** False where the host pushes battery and program state itself (Electron's powerMonitor). */
  pollHost?: boolean;
  hostSensors?: boolean;
  /** GPU telemetry sources (default: nvidia-smi, amdgpu sysfs); [] where there are none to read. */
  telemetrySources?: TelemetrySource[];
  /** Set an unusable ledger aside and start a new one (the person chose it: --fresh-ledger). */
  freshLedger?: boolean;
  /** Serve the local dashboard; null: don't. */
  dashboard: { staticDir: string | null; port?: number } | null;
}

/**
 * The one composition of a contributor: agent (policy, ledger, dashboard) plus a node runtime for the
 * network the person chose, wired the same way for the CLI and the desktop app. The ledger checks every
 * receipt against this node's id and the accepted networks' coordinator keys. Switching networks (the
 * first-run screen, Settings) stops the old node, handing its micro-batch back, and starts a new one.
 */
export class ContributorHost {
  private node: NodeRuntime | null = null;
  private unfollow: (() => void) | null = null;
  private suspended = false;
  private switching: Promise<void> = Promise.resolve();
  private readonly nodeListeners = new Set<(node: NodeRuntime | null) => void>();

  private constructor(
    readonly agent: Agent,
    readonly dashboard: DashboardServer | null,
    private readonly options: ContributorHostOptions,
  ) {}

  static async start(options: ContributorHostOptions): Promise<ContributorHost> {
    const agent = await Agent.open({
      dataDir: options.dataDir,
      settings: options.settings,
      overrides: options.overrides,
      network: options.network,
      nodeId: options.keys.publicKeyHex,
      headSigner: options.keys,
      freshLedger: options.freshLedger,
      pollHost: options.pollHost,
      hostSensors: options.hostSensors,
      telemetrySources: options.telemetrySources,
      logger: options.logger.child({ name: 'agent' }),
    });
    agent.start();
    const dashboard = options.dashboard ? await agent.startDashboard(options.dashboard) : null;
    const host = new ContributorHost(agent, dashboard, options);
    agent.onNetworkChange(() => host.restartNode());
    await host.restartNode();
    return host;
  }

  /** The node for the active network; null before the person has chosen one. */
  get currentNode(): NodeRuntime | null {
    return this.node;
  }

  /** Told of every node the host starts (and null when it stops one), e.g. to follow its status. */
  onNode(listener: (node: NodeRuntime | null) => void): () => void {
    this.nodeListeners.add(listener);
    listener(this.node);
    return () => this.nodeListeners.delete(listener);
  }

  /** Before the machine sleeps: hand the micro-batch in flight back, so the network does not wait for us. */
  async suspend(): Promise<void> {
    this.suspended = true;
    await this.restartNode();
  }

  /** After it wakes: reconnect. */
  async resume(): Promise<void> {
    this.suspended = false;
    await this.restartNode();
  }

  /** The node first (the unit in flight completes or goes back), then the agent flushes the ledger. */
  async stop(): Promise<void> {
    this.suspended = true;
    await this.restartNode();
    await this.agent.stop();
  }

  private restartNode(): Promise<void> {
    this.switching = this.switching.then(async () => {
      this.unfollow?.();
      this.unfollow = null;
      if (this.node) {
        const old = this.node;
        this.node = null;
        for (const listener of this.nodeListeners) listener(null);
        await old.stop();
      }
      const network = this.agent.activeNetwork();
      if (!network || this.suspended) {
        this.agent.setNetwork(
          network
            ? offlineNetwork(
                network,
                'disconnected',
                'Work handed back while the computer sleeps or Tributary stops',
              )
            : offlineNetwork(null, 'not-joined', 'No network chosen yet'),
        );
        this.agent.tick();
        return;
      }
      this.node = this.startNode(network);
      for (const listener of this.nodeListeners) listener(this.node);
    });
    return this.switching;
  }

  private startNode(network: AgentNetwork): NodeRuntime {
    const { keys, engine, ca, createStage, logger } = this.options;
    // Trust on first use: a network given without its key is pinned the first time it answers.
    const pins = new FileCoordinatorPins(agentPaths(this.options.dataDir).coordinatorPins);
    const pinned = network.coordinatorKey ?? pins.get(network.url);
    if (pinned) this.agent.trustCoordinatorKey(pinned);
    const node = new NodeRuntime({
      coordinatorUrl: network.url,
      keys,
      engine,
      coordinatorKey: network.coordinatorKey ?? undefined,
      pins,
      payoutAddress: () => this.agent.ledger.payoutAddress(),
      ca,
      gate: this.agent.gate,
      sink: this.agent.receipts,
      createStage,
      logger,
      // The engine's per-adapter matmul tuning, kept across runs.
      tuningCachePath: join(this.options.dataDir, 'gpu-tuning.json'),
      // The VRAM cap refuses a stage before the engine allocates it; the policy then pauses with the reason.
      admitStage: admitUnderCap(
        estimateStageMemoryBytes,
        () => this.agent.snapshot().settings.vramCapMb,
        (range, bytes) =>
          this.agent.setStage(
            {
              index: range.index,
              count: range.count,
              firstBlock: range.firstBlock,
              lastBlock: range.endBlock - 1,
            },
            bytes,
          ),
      ),
    });
    node.on('work', (unit: WorkUnit) => this.agent.recordWorkUnit(unit));
    node.on('pinned', (key: string) => {
      logger.warn(
        { network: network.url, coordinatorKey: key },
        'pinned the coordinator key on first contact',
      );
      this.agent.trustCoordinatorKey(key);
    });
    this.unfollow = followRun(this.agent, node, network);
    this.agent.tick();
    logger.info({ nodeId: keys.publicKeyHex, network: network.url, engine }, 'starting node');
    node.start();
    return node;
  }
}
