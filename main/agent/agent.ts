import { mkdir } from 'node:fs/promises';
import pino, { type Logger } from 'pino';
import type {
  AgentCommand,
  AgentSnapshot,
  CommandResult,
  Inventory,
  ReconciliationSnapshot,
  ReasonCode,
  AgentState,
  WalletSnapshot,
} from '../../shared/dashboard/contract.js';
import type { AgentSettings } from '../../shared/dashboard/settings.js';
import type { SignedReceipt } from '../../shared/protocol/receipt.js';
import type { ReceiptSink, WorkGate } from '../node/hooks.js';
import { systemClock, type Clock } from './clock.js';
import { startDashboardServer, type DashboardServer } from './dashboard/server.js';
import { loadOrCreateToken } from './dashboard/token.js';
import { EXPORT_TABLES, Ledger, ReceiptRejected, type ExportTable, type WorkUnit } from './ledger/ledger.js';
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
import { TemperatureController } from './throttle/temperature.js';
import { readInventory } from './telemetry/inventory.js';
import { Telemetry } from './telemetry/telemetry.js';
import type { TelemetrySource } from './telemetry/types.js';
import { reconcile, validatePayoutAddress, type CoordinatorStatement } from './wallet.js';

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
  /**
   * Poll battery state and running programs from plain Node (off where the host pushes them with
   * setInputs, as the Electron shell does from powerMonitor, and in tests).
   */
  pollHost?: boolean;
  /** How often the policy is re-evaluated and a snapshot published; 0 leaves ticking to the caller. */
  tickMs?: number;
  logger?: Logger;
}

type StageInfo = AgentSnapshot['stage'];
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
  private loss: { step: number; loss: number }[] = [];
  private wallet: { revision: number; value: WalletSnapshot } | null = null;
  private readonly listeners = new Set<(snapshot: AgentSnapshot) => void>();
  private timers: NodeJS.Timeout[] = [];
  private inventory: Inventory | undefined;
  private reconciliation: ReconciliationSnapshot | undefined;
  private dashboard: DashboardServer | null = null;
  private stopped = false;

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
    this.pacer = new DutyCyclePacer(this.clock);
    this.pacer.setDutyCycle(0);
    this.ledger = new Ledger(agentPaths(options.dataDir).ledger, {
      trustedCoordinatorKeys: options.trustedCoordinatorKeys,
      nodeId: options.nodeId,
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
    const stored = options.settings ?? (await loadSettings(agentPaths(options.dataDir).settings));
    const layered = layerSettings(stored, options.overrides);
    if (!layered.ok) throw new Error(`invalid settings:\n  ${layered.errors.join('\n  ')}`);
    const agent = new Agent(options, layered.settings);
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
      } catch (err) {
        if (!(err instanceof ReceiptRejected)) throw err;
        this.logger.warn({ receipt: signed?.receipt?.receiptId }, err.message);
        this.ledger.recordEvent('receipt-rejected', {
          receiptId: signed?.receipt?.receiptId ?? null,
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

  addLoss(step: number, loss: number): void {
    this.loss.push({ step, loss });
    if (this.loss.length > MAX_LOSS_POINTS) this.loss.splice(0, this.loss.length - MAX_LOSS_POINTS);
  }

  /** Compares the ledger with the coordinator's statement; the result shows in the wallet and the ledger. */
  reconcile(statement: CoordinatorStatement): ReconciliationSnapshot {
    const { matches, summary, differenceFlops, missingLocally, missingFromStatement } = reconcile(
      this.ledger,
      statement,
    );
    this.reconciliation = {
      at: new Date(this.clock.now()).toISOString(),
      matches,
      summary,
      differenceFlops,
      missingLocally,
      missingFromStatement,
    };
    this.ledger.recordEvent('reconciled', { matches, differenceFlops, statementFlops: statement.totalFlops });
    return this.reconciliation;
  }

  recordWorkUnit(unit: WorkUnit): void {
    this.ledger.recordWorkUnit(unit);
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
    this.effectiveDuty = decision.dutyCycle * factor;
    this.pacer.setDutyCycle(this.effectiveDuty);
    this.publish();
    return decision;
  }

  private status(): { state: AgentState; reasonCode: ReasonCode; reason: string } {
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
        const result = patchLayeredSettings(this.layered, command.patch);
        if (!result.ok) return result;
        this.layered = result.settings;
        this.policy.setSettings(this.settings);
        this.thermal.setLimit(this.settings.gpuTempLimitC);
        await saveSettings(agentPaths(this.options.dataDir).settings, this.layered.stored);
        break;
      }
      case 'setPayoutAddress': {
        const result = validatePayoutAddress(command.address);
        if (!result.ok) return { ok: false, errors: [result.error] };
        this.ledger.setPayoutAddress(result.address);
        break;
      }
    }
    this.tick();
    return { ok: true };
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
