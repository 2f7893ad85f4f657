import { randomBytes } from 'node:crypto';
import { mkdir } from 'node:fs/promises';
import pino, { type Logger } from 'pino';
import type {
  AgentCommand,
  AgentSnapshot,
  CommandResult,
  Inventory,
  ReconciliationSnapshot,
  NetworkSnapshot,
  WalletSnapshot,
} from '../../shared/dashboard/contract.js';
import {
  networkEntrySchema,
  type AgentSettings,
  type NetworkEntry,
  type SettingsPatch,
} from '../../shared/dashboard/settings.js';
import type { SignedCreditStatement } from '../../shared/protocol/credit-statement.js';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';
import type { ReceiptSink, WorkGate } from '../node/hooks.js';
import { systemClock, type Clock } from './clock.js';
import { combineState, offlineNetwork, type StateLine } from './combined-state.js';
import { startDashboardServer, type DashboardServer } from './dashboard/server.js';
import { loadOrCreateToken } from './dashboard/token.js';
import type { HeadSigner } from './ledger/head-file.js';
import { inspectLedger, setLedgerAside } from './ledger/health.js';
import {
  EXPORT_TABLES,
  Ledger,
  LedgerFull,
  ReceiptRejected,
  StatementRejected,
  type ExportTable,
  type WorkUnit,
} from './ledger/ledger.js';
import { listProcessNames, readOnBattery } from './host-signals.js';
import { agentPaths } from './paths.js';
import { neutralInputs, Policy, type PolicyDecision, type PolicyInputs } from './policy.js';
import {
  layerSettings,
  loadSettings,
  patchLayeredSettings,
  saveSettings,
  type LayeredSettings,
} from './settings-store.js';
import { DutyCyclePacer } from './throttle/pacer.js';
import { probeNetwork } from './probe-network.js';
import { RateMeter } from './rate-meter.js';
import { TemperatureController } from './throttle/temperature.js';
import { readInventory } from './telemetry/inventory.js';
import { Telemetry } from './telemetry/telemetry.js';
import type { TelemetrySource } from './telemetry/types.js';
import { reconcile, validatePayoutAddress } from './wallet.js';

export interface AgentOptions {
  dataDir: string;
  clock?: Clock;
  /** Overrides settings.json (tests, `--settings` flags); otherwise settings.json or defaults. */
  settings?: AgentSettings;
  /** For this run only (command-line flags): applied over the settings, never saved to settings.json. */
  overrides?: Partial<AgentSettings>;
  /** GPU telemetry sources; defaults to nvidia-smi (+ amdgpu sysfs on Linux). Pass [] to feed readings by hand. */
  telemetrySources?: TelemetrySource[];
  /** Read CPU temperature and the macOS thermal state (off in tests). */
  hostSensors?: boolean;
  trustedCoordinatorKeys?: string[];
  nodeId?: string;
  /** The node's key, to sign the ledger's chain head (ledger/head-file.ts). */
  headSigner?: HeadSigner;
  /**
   * An empty, truncated or cut-short ledger stops the agent from opening (LedgerUnusable); true sets that
   * file aside and starts a new ledger instead. The person chooses this, never the code.
   */
  freshLedger?: boolean;
  /**
   * Poll battery state and running programs from plain Node (off where the host pushes them with
   * setInputs, as the Electron shell does from powerMonitor, and in tests).
   */
  pollHost?: boolean;
  /** How often the policy is re-evaluated and a snapshot published; 0 leaves ticking to the caller. */
  tickMs?: number;
  logger?: Logger;
  /**
   * The network given on the command line (`tributary node --coordinator`): joining it there is the
   * person's consent. Without it the agent works for the network accepted in settings, if any.
   */
  network?: { url: string; coordinatorKey: string | null };
}

/** The ledger on disk is empty, truncated or lost its newest entries; the agent will not start on it. */
export class LedgerUnusable extends Error {}

type StageInfo = AgentSnapshot['stage'];
/** A network to work for: where its coordinator is and the key it must hold (null: trust on first use). */
export type AgentNetwork = { url: string; coordinatorKey: string | null };
type Progress = AgentSnapshot['progress'];
const MAX_LOSS_POINTS = 2000;

/**
 * The contributor agent: policy, throttling, telemetry, ledger and dashboard state in one object that the
 * node runtime (through `gate` and `receipts`) and the Electron shell or CLI (through inputs, commands and
 * snapshots) can host.
 */
export class Agent {
  readonly clock: Clock;
  readonly ledger: Ledger;
  readonly telemetry: Telemetry;
  private readonly pacer: DutyCyclePacer;
  private readonly policy: Policy;
  private readonly thermal: TemperatureController;
  private readonly logger: Logger;
  private layered: LayeredSettings;
  private inputs: PolicyInputs = { ...neutralInputs };
  private decision: PolicyDecision | null = null;
  private effectiveDuty = 0;
  private stage: StageInfo = null;
  private progress: Progress = null;
  private loss: AgentSnapshot['loss'] = [];
  private wallet: { revision: number; value: WalletSnapshot } | null = null;
  private readonly listeners = new Set<(snapshot: AgentSnapshot) => void>();
  private timers: NodeJS.Timeout[] = [];
  private inventory: Inventory | undefined;
  private reconciliation: ReconciliationSnapshot | undefined;
  private dashboard: DashboardServer | null = null;
  private stopped = false;
  /** Null while no node is attached (the agent alone); then the policy's state is the whole state. */
  private network: NetworkSnapshot | null = null;
  private gpuProblem: string | null = null;
  private readonly rates: RateMeter;
  private readonly networkListeners = new Set<(network: AgentNetwork | null) => void | Promise<void>>();
  /**
   * Coordinator keys whose receipts the ledger accepts: the host's, the command line's network's and every
   * network the person accepted. The ledger reads this list on each receipt, so accepting a network extends it.
   */
  private readonly trustedKeys: string[] = [];

  private constructor(
    private readonly options: AgentOptions,
    layered: LayeredSettings,
  ) {
    this.clock = options.clock ?? systemClock;
    this.logger = options.logger ?? pino({ level: 'silent' });
    this.layered = layered;
    const settings = layered.effective;
    this.policy = new Policy(settings);
    this.thermal = new TemperatureController(settings.gpuTempLimitC);
    this.rates = new RateMeter(this.clock);
    this.pacer = new DutyCyclePacer(this.clock);
    this.pacer.setDutyCycle(0);
    this.syncTrustedKeys();
    this.ledger = new Ledger(agentPaths(options.dataDir).ledger, {
      trustedCoordinatorKeys: this.trustedKeys,
      nodeId: options.nodeId,
      headSigner: options.headSigner,
      now: () => this.clock.now(),
    });
    this.telemetry = new Telemetry({
      clock: this.clock,
      sources: options.telemetrySources,
      hostSensors: options.hostSensors,
    });
  }

  static async open(options: AgentOptions): Promise<Agent> {
    await mkdir(options.dataDir, { recursive: true, mode: 0o700 });
    const ledgerPath = agentPaths(options.dataDir).ledger;
    const health = inspectLedger(ledgerPath);
    let setAside: { path: string; reason: string } | null = null;
    if (health.state === 'unusable') {
      if (!options.freshLedger)
        throw new LedgerUnusable(
          `The ledger at ${ledgerPath} is unusable: ${health.reason}. Nothing was changed. ` +
            'Run `tributary ledger verify` to see more; start with --fresh-ledger to set it aside and begin a new ' +
            'one (the coordinator still holds your receipts).',
        );
      setAside = { path: setLedgerAside(ledgerPath, new Date()), reason: health.reason };
    }
    const stored = options.settings ?? (await loadSettings(agentPaths(options.dataDir).settings));
    const layered = layerSettings(stored, options.overrides);
    if (!layered.ok) throw new Error(`invalid settings:\n  ${layered.errors.join('\n  ')}`);
    const agent = new Agent(options, layered.settings);
    if (setAside) agent.ledger.recordEvent('ledger-set-aside', setAside);
    agent.tick();
    return agent;
  }

  private get settings(): AgentSettings {
    return this.layered.effective;
  }

  /** The runtime awaits this around every micro-batch (see main/node/hooks.ts). */
  get gate(): WorkGate {
    return this.pacer;
  }

  /** The runtime hands every signed receipt here; bad ones are logged in the ledger, never thrown back. */
  readonly receipts: ReceiptSink = {
    accept: (signed: SignedReceipt) => {
      if (this.stopped) {
        // Stop the runtime before the agent; the coordinator still holds this receipt for reconciliation.
        this.logger.error({ receipt: signed?.receipt?.receiptId }, 'receipt arrived after the agent stopped');
        return;
      }
      try {
        this.ledger.acceptReceipt(signed);
        this.rates.add(signed.receipt.tokens, signed.receipt.flops);
      } catch (err) {
        if (err instanceof LedgerFull) return void this.logger.error(err.message);
        if (!(err instanceof ReceiptRejected)) throw err;
        this.logger.warn({ receipt: signed?.receipt?.receiptId }, err.message);
        this.ledger.recordEvent('receipt-rejected', {
          receiptId: signed?.receipt?.receiptId ?? null,
          reason: err.message,
        });
      }
    },
    acceptStatement: (signed: SignedCreditStatement) => {
      if (this.stopped) return;
      try {
        if (this.ledger.applyStatement(signed).stored) this.reconcile();
      } catch (err) {
        if (err instanceof LedgerFull) return void this.logger.error(err.message);
        if (!(err instanceof StatementRejected)) throw err;
        this.logger.warn({ statement: signed?.statement?.seq }, err.message);
        this.ledger.recordEvent('statement-rejected', {
          seq: signed?.statement?.seq ?? null,
          reason: err.message,
        });
      }
    },
  };

  start(): void {
    this.telemetry.start();
    if (this.options.hostSensors ?? true) {
      readInventory().then(
        (inventory) => {
          this.inventory = inventory;
          this.logger.info({ inventory }, 'hardware inventory');
        },
        (err: unknown) =>
          this.logger.warn(`could not read the hardware inventory: ${(err as Error).message}`),
      );
    }
    const tickMs = this.options.tickMs ?? 1000;
    if (tickMs > 0) this.every(tickMs, () => this.tick());
    if (this.options.pollHost ?? true) {
      const pollBattery = async (): Promise<void> => {
        if (this.settings.pauseOnBattery) this.setInputs({ onBattery: await readOnBattery() });
      };
      const pollPrograms = async (): Promise<void> => {
        if (this.settings.pausePrograms.length > 0)
          this.setInputs({ runningPrograms: await listProcessNames() });
      };
      void pollBattery();
      void pollPrograms();
      this.every(30_000, () => void pollBattery());
      this.every(10_000, () => void pollPrograms());
    }
  }

  private every(ms: number, fn: () => void): void {
    const timer = setInterval(fn, ms);
    timer.unref();
    this.timers.push(timer);
  }

  /** Closes the gate (work in flight finishes; nothing new starts), stops polling and closes the ledger. */
  async stop(): Promise<void> {
    if (this.stopped) return;
    this.stopped = true;
    this.pacer.setDutyCycle(0);
    for (const timer of this.timers) clearInterval(timer);
    this.timers = [];
    this.telemetry.stop();
    await this.dashboard?.close();
    this.dashboard = null;
    this.ledger.close();
  }

  /** The host's observations (idle time, lock, battery, programs, thermal state, stage memory). */
  setInputs(inputs: Partial<PolicyInputs>): void {
    this.inputs = { ...this.inputs, ...inputs };
  }

  setStage(stage: StageInfo, memoryBytes: number | null): void {
    this.stage = stage;
    this.inputs = { ...this.inputs, stageMemoryBytes: memoryBytes };
  }

  setProgress(progress: Progress): void {
    this.progress = progress;
  }

  /** Where the node stands with its network (main/agent/follow-run.ts reports it). */
  setNetwork(network: NetworkSnapshot | null): void {
    this.network = network;
  }

  /** Why the GPU cannot work right now (the worker crashed or lost its device), or null once it can. */
  setGpuProblem(problem: string | null): void {
    this.gpuProblem = problem;
    this.tick();
  }

  /**
   * The network this machine works for: the command line's, else the one accepted in settings; null until
   * the person has chosen one (the first-run screen), which keeps the agent paused.
   */
  activeNetwork(): AgentNetwork | null {
    if (this.options.network) return this.options.network;
    const url = this.settings.activeNetwork;
    return this.settings.networks.find((n) => n.url === url) ?? null;
  }

  /** Called (and awaited) with the new active network whenever the person switches networks or leaves them. */
  onNetworkChange(listener: (network: AgentNetwork | null) => void | Promise<void>): () => void {
    this.networkListeners.add(listener);
    return () => this.networkListeners.delete(listener);
  }

  addLoss(step: number, loss: number): void {
    // After a reconnect the coordinator sends its recent history again.
    if (step <= (this.loss.at(-1)?.step ?? -1)) return;
    this.loss.push({ step, loss });
    if (this.loss.length > MAX_LOSS_POINTS) this.loss.splice(0, this.loss.length - MAX_LOSS_POINTS);
  }

  /** The held-out validation loss measured after step `step`, shown beside that step's training loss. */
  addValidationLoss(step: number, loss: number): void {
    const i = this.loss.findIndex((p) => p.step === step);
    if (i >= 0) this.loss[i] = { ...this.loss[i]!, validation: loss };
  }

  /**
   * Compares the ledger with the coordinator's statements, after each one applied; the result shows in the
   * wallet and is recorded in the ledger. Reads per-run totals, not the whole ledger (Ledger.compareWithStatements).
   */
  reconcile(): ReconciliationSnapshot {
    const { matches, summary, differenceFlops, missingLocally, missingFromStatement, statementFlops } =
      reconcile(this.ledger);
    this.reconciliation = {
      at: new Date(this.clock.now()).toISOString(),
      matches,
      summary,
      differenceFlops,
      missingLocally,
      missingFromStatement,
    };
    this.ledger.recordEvent('reconciled', { matches, differenceFlops, statementFlops });
    return this.reconciliation;
  }

  /** The node runtime reports each task its engine ran ('work'); the ledger keeps it beside the receipts. */
  recordWorkUnit(unit: WorkUnit): void {
    if (this.stopped) return;
    try {
      this.ledger.recordWorkUnit(unit);
    } catch (err) {
      // A full disk must not stop training: the receipts, which carry the credit, still arrive.
      this.logger.error({ err: (err as Error).message }, 'could not record a work unit');
    }
  }

  /** Re-evaluates policy and temperature, sets the pacer, and publishes a snapshot. */
  tick(): PolicyDecision {
    if (this.stopped && this.decision) return this.decision;
    const now = this.clock.now();
    const telemetry = this.telemetry.snapshot();
    const thermalState =
      telemetry.thermalState !== 'unknown' ? telemetry.thermalState : this.inputs.thermalState;
    const decision = this.policy.evaluate(
      { ...this.inputs, gpuTempC: telemetry.gpuTempC, thermalState },
      now,
    );
    const factor = decision.state === 'running' ? this.thermal.update(telemetry.gpuTempC, now) : 1;
    this.decision = decision;
    // Not set up: nothing runs until the person accepts a network (the node is not even started then).
    const blocked = this.network?.phase === 'not-joined' || this.gpuProblem !== null;
    this.effectiveDuty = blocked ? 0 : decision.dutyCycle * factor;
    this.pacer.setDutyCycle(this.effectiveDuty);
    this.publish();
    return decision;
  }

  private status(): StateLine {
    return combineState(this.policyStatus(), this.network, this.gpuProblem);
  }

  private policyStatus(): StateLine {
    const d = this.decision!;
    if (d.state !== 'running' || this.thermal.factor >= 0.995)
      return { state: d.state, reasonCode: d.reasonCode, reason: d.reason };
    const temp = Math.round(this.telemetry.snapshot().gpuTempC ?? 0);
    const limit = this.settings.gpuTempLimitC;
    if (this.effectiveDuty <= 0) {
      return {
        state: 'waiting',
        reasonCode: 'gpu-hot',
        reason: `Holding: GPU at ${temp} °C, at your ${limit} °C limit`,
      };
    }
    return {
      state: 'running',
      reasonCode: 'throttled',
      reason: `Contributing, slowed to ${Math.round(this.effectiveDuty * 100)}%: GPU at ${temp} °C, near your ${limit} °C limit`,
    };
  }

  snapshot(): AgentSnapshot {
    if (this.wallet?.revision !== this.ledger.revision) {
      this.wallet = { revision: this.ledger.revision, value: this.ledger.wallet() };
    }
    const status = this.status();
    return {
      version: 1,
      at: new Date(this.clock.now()).toISOString(),
      ...status,
      resumeAt: this.decision?.resumeAt == null ? null : new Date(this.decision.resumeAt).toISOString(),
      dutyCyclePct: Math.round(this.effectiveDuty * 1000) / 10,
      telemetry: this.telemetry.snapshot(),
      stage: this.stage,
      progress: this.progress,
      loss: this.loss,
      network: this.network ?? offlineNetwork(this.activeNetwork(), 'not-joined', 'No node attached'),
      rates: this.rates.read(),
      wallet: this.reconciliation
        ? { ...this.wallet.value, reconciliation: this.reconciliation }
        : this.wallet.value,
      settings: this.settings,
      ...(this.inventory ? { inventory: this.inventory } : {}),
    };
  }

  onSnapshot(listener: (snapshot: AgentSnapshot) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private publish(): void {
    if (this.listeners.size === 0) return;
    const snapshot = this.snapshot();
    for (const listener of this.listeners) listener(snapshot);
  }

  async command(command: AgentCommand): Promise<CommandResult> {
    if (this.stopped) return { ok: false, errors: ['Tributary is shutting down.'] };
    switch (command.type) {
      case 'pause':
        this.policy.pause(command.duration, this.clock.now());
        this.ledger.recordEvent('pause', { duration: command.duration });
        break;
      case 'resume':
        this.policy.resume();
        this.ledger.recordEvent('resume');
        break;
      case 'updateSettings': {
        const result = await this.applySettings(command.patch);
        if (!result.ok) return result;
        break;
      }
      case 'setPayoutAddress': {
        const result = validatePayoutAddress(command.address);
        if (!result.ok) return { ok: false, errors: [result.error] };
        this.ledger.setPayoutAddress(result.address);
        break;
      }
      case 'probeNetwork': {
        const result = await probeNetwork(
          command.url,
          this.options.nodeId ?? randomBytes(32).toString('hex'),
        );
        if (!result.ok) return { ok: false, errors: [result.error] };
        return { ok: true, probe: result.probe };
      }
      case 'joinNetwork': {
        const payout = command.payoutAddress ? validatePayoutAddress(command.payoutAddress) : null;
        if (payout && !payout.ok) return { ok: false, errors: [`payoutAddress: ${payout.error}`] };
        const entry: NetworkEntry = networkEntrySchema.parse(command.network);
        const networks = [...this.settings.networks.filter((n) => n.url !== entry.url), entry];
        const result = await this.applySettings({
          networks,
          activeNetwork: entry.url,
          startAtLogin: command.startAtLogin,
        });
        if (!result.ok) return result;
        if (payout?.ok) this.ledger.setPayoutAddress(payout.address);
        this.ledger.recordEvent('joined-network', { url: entry.url, coordinatorKey: entry.coordinatorKey });
        break;
      }
    }
    this.tick();
    return { ok: true };
  }

  /** Validates, saves and applies a settings change; tells the host when the active network changed. */
  private async applySettings(patch: SettingsPatch): Promise<CommandResult> {
    const result = patchLayeredSettings(this.layered, patch);
    if (!result.ok) return result;
    const before = this.activeNetwork();
    this.layered = result.settings;
    this.policy.setSettings(this.settings);
    this.thermal.setLimit(this.settings.gpuTempLimitC);
    this.syncTrustedKeys();
    // Only what the person chose is saved; one-run flag overrides stay out of settings.json.
    await saveSettings(agentPaths(this.options.dataDir).settings, this.layered.stored);
    const after = this.activeNetwork();
    if (before?.url !== after?.url || before?.coordinatorKey !== after?.coordinatorKey) {
      // The command answers once the host has switched, so the UI never shows the old network as current.
      await Promise.all([...this.networkListeners].map((listener) => listener(after)));
    }
    return { ok: true };
  }

  /** A coordinator key pinned on first contact: its receipts and statements are accepted from now on. */
  trustCoordinatorKey(key: string): void {
    if (!this.trustedKeys.includes(key)) this.trustedKeys.push(key);
  }

  private syncTrustedKeys(): void {
    const keys = [
      ...(this.options.trustedCoordinatorKeys ?? []),
      ...(this.options.network?.coordinatorKey ? [this.options.network.coordinatorKey] : []),
      ...this.settings.networks.map((n) => n.coordinatorKey),
    ];
    for (const key of keys) if (!this.trustedKeys.includes(key)) this.trustedKeys.push(key);
  }

  exportCsv(table: string): string {
    if (!(EXPORT_TABLES as readonly string[]).includes(table)) {
      throw new Error(`unknown table "${table}"; choose one of ${EXPORT_TABLES.join(', ')}`);
    }
    return this.ledger.exportCsv(table as ExportTable);
  }

  /** Serves the dashboard on 127.0.0.1; the token lives in the data dir (0600). */
  async startDashboard(options: { staticDir: string | null; port?: number }): Promise<DashboardServer> {
    const token = await loadOrCreateToken(agentPaths(this.options.dataDir).dashboardToken);
    this.dashboard = await startDashboardServer({
      host: this,
      token,
      staticDir: options.staticDir,
      port: options.port ?? this.settings.dashboardPort,
    });
    return this.dashboard;
  }
}
