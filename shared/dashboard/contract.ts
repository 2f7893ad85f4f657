import { z } from 'zod';
import { agentSettingsSchema, networkEntrySchema, settingsPatchSchema } from './settings.js';

/**
 * The one contract between the agent and any UI: the Electron preload (IPC) and the local web dashboard
 * (WebSocket) carry exactly these messages. Everything arriving from the other side is validated.
 */

export const agentStateSchema = z.enum(['running', 'waiting', 'paused']);
export type AgentState = z.infer<typeof agentStateSchema>;

/** Why the agent is (not) running; the UI may pick an icon per code, the text is in `reason`. */
export const reasonCodeSchema = z.enum([
  'running',
  'throttled',
  'user-paused',
  'schedule',
  'not-idle',
  'on-battery',
  'program-running',
  'os-thermal',
  'gpu-hot',
  'vram-cap',
  'no-work',
  /** No network chosen yet, or its terms not accepted: the first-run screen. */
  'not-set-up',
  'connecting',
  'disconnected',
  'waiting-for-stage',
  'run-finished',
  /** The GPU worker crashed or lost its device and is being restarted. */
  'gpu-restarting',
]);
export type ReasonCode = z.infer<typeof reasonCodeSchema>;

export const thermalStateSchema = z.enum(['unknown', 'nominal', 'fair', 'serious', 'critical']);
export type ThermalState = z.infer<typeof thermalStateSchema>;

const nullableNumber = z.number().finite().nullable();

export const telemetrySnapshotSchema = z
  .object({
    gpuTempC: nullableNumber,
    gpuUtilPct: nullableNumber,
    gpuPowerW: nullableNumber,
    vramUsedMb: nullableNumber,
    vramTotalMb: nullableNumber,
    cpuTempC: nullableNumber,
    thermalState: thermalStateSchema,
    /** Where the GPU readings come from: "nvidia-smi", "amd-sysfs", "simulated", or "none". */
    source: z.string(),
  })
  .strict();
export type TelemetrySnapshot = z.infer<typeof telemetrySnapshotSchema>;

export const stageInfoSchema = z
  .object({
    index: z.number().int().min(0),
    count: z.number().int().min(1),
    firstBlock: z.number().int().min(0),
    lastBlock: z.number().int().min(0),
  })
  .strict();

export const progressSchema = z
  .object({
    step: z.number().int().min(0),
    /** 0..1 of the current global step done on this node. */
    stepFraction: z.number().min(0).max(1),
    totalSteps: z.number().int().min(0).nullable(),
  })
  .strict();

/** Where this node stands with its network, as the node runtime last reported it. */
export const networkPhaseSchema = z.enum([
  'not-joined',
  'connecting',
  'waiting-for-stage',
  'training',
  'run-finished',
  'disconnected',
  'refused',
]);
export type NetworkPhase = z.infer<typeof networkPhaseSchema>;

export const networkSnapshotSchema = z
  .object({
    /** The coordinator this node works for; null before the person chose one. */
    url: z.string().nullable(),
    /** The coordinator's pinned ed25519 key (hex); null when none is pinned. */
    coordinatorKey: z.string().nullable(),
    phase: networkPhaseSchema,
    /** A sentence: "Disconnected (1006); reconnecting in 4 s", "The run finished: 2000 steps done". */
    detail: z.string(),
    /** When the next reconnect attempt is due, while disconnected. */
    retryAt: z.iso.datetime().nullable(),
    /** The whole network's training speed, from the coordinator. */
    tokensPerSecond: nullableNumber,
  })
  .strict();
export type NetworkSnapshot = z.infer<typeof networkSnapshotSchema>;

/** This node's own pace, measured over the last few minutes of receipts. */
export const ratesSchema = z
  .object({
    tokensPerSecond: nullableNumber,
    /** Credit earned per hour at that pace, FLOP. */
    flopsPerHour: nullableNumber,
  })
  .strict();
export type Rates = z.infer<typeof ratesSchema>;

export const receiptStatusSchema = z.enum(['pending', 'confirmed', 'revoked']);
export type ReceiptStatus = z.infer<typeof receiptStatusSchema>;

export const receiptRowSchema = z
  .object({
    receiptId: z.string(),
    runId: z.string(),
    issuedAt: z.string(),
    stage: z.number().int(),
    step: z.number().int(),
    tokens: z.number().int(),
    flops: z.number(),
    status: receiptStatusSchema,
    /** A coordinator statement said a second replica recomputed this work and agreed. */
    verified: z.boolean(),
  })
  .strict();
export type ReceiptRow = z.infer<typeof receiptRowSchema>;

/** The last comparison of the local ledger with the coordinator's statement of this node's credit. */
export const reconciliationSchema = z
  .object({
    at: z.iso.datetime(),
    matches: z.boolean(),
    /** "Balance matches the coordinator: ..." or what differs, in words. */
    summary: z.string(),
    /** Statement total minus local total, FLOPs. */
    differenceFlops: z.number(),
    missingLocally: z.array(z.string()),
    missingFromStatement: z.array(z.string()),
  })
  .strict();
export type ReconciliationSnapshot = z.infer<typeof reconciliationSchema>;

export const walletSnapshotSchema = z
  .object({
    confirmedFlops: z.number(),
    pendingFlops: z.number(),
    revokedFlops: z.number(),
    payoutAddress: z.string().nullable(),
    /** Non-revoked FLOPs per UTC day of issue (YYYY-MM-DD), oldest first. */
    earnings: z.array(z.object({ day: z.string(), flops: z.number() }).strict()),
    recentReceipts: z.array(receiptRowSchema),
    /** Absent until the coordinator has sent a statement. */
    reconciliation: reconciliationSchema.optional(),
  })
  .strict();
export type WalletSnapshot = z.infer<typeof walletSnapshotSchema>;

/** What the machine has, read once when the agent starts. */
export const inventorySchema = z
  .object({
    gpus: z.array(
      z.object({ vendor: z.string(), model: z.string(), vramMb: z.number().nullable() }).strict(),
    ),
    cpu: z.string(),
    cores: z.number().int(),
    memoryMb: z.number(),
  })
  .strict();
export type Inventory = z.infer<typeof inventorySchema>;

export const agentSnapshotSchema = z
  .object({
    version: z.literal(1),
    at: z.iso.datetime(),
    state: agentStateSchema,
    reasonCode: reasonCodeSchema,
    /** A sentence a person can read: "Waiting: you used the computer 40 s ago; contributes after 3 min idle". */
    reason: z.string(),
    /** When a user pause ends; null when not paused by the user or paused indefinitely. */
    resumeAt: z.iso.datetime().nullable(),
    /** Effective GPU duty cycle now (policy cap x temperature controller), 0..100. */
    dutyCyclePct: z.number().min(0).max(100),
    telemetry: telemetrySnapshotSchema,
    stage: stageInfoSchema.nullable(),
    progress: progressSchema.nullable(),
    /** The network's loss curve, as the coordinator reports it; `validation` where a held-out evaluation followed the step. */
    loss: z.array(
      z.object({ step: z.number().int(), loss: z.number(), validation: z.number().optional() }).strict(),
    ),
    network: networkSnapshotSchema,
    rates: ratesSchema,
    wallet: walletSnapshotSchema,
    settings: agentSettingsSchema,
    /** Absent until the one-off hardware inventory has been read. */
    inventory: inventorySchema.optional(),
  })
  .strict();
export type AgentSnapshot = z.infer<typeof agentSnapshotSchema>;

export const pauseDurationSchema = z.enum(['1h', 'tomorrow', 'indefinitely']);
export type PauseDuration = z.infer<typeof pauseDurationSchema>;

export const agentCommandSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('pause'), duration: pauseDurationSchema }).strict(),
  z.object({ type: z.literal('resume') }).strict(),
  z.object({ type: z.literal('updateSettings'), patch: settingsPatchSchema }).strict(),
  z.object({ type: z.literal('setPayoutAddress'), address: z.string().max(100) }).strict(),
  /** Ask a coordinator for its key, so the person can see it before accepting (first run, Settings). */
  z.object({ type: z.literal('probeNetwork'), url: z.string().max(500) }).strict(),
  /** The first-run screen's one "accept": the network (its key pinned), a payout address, start at login. */
  z
    .object({
      type: z.literal('joinNetwork'),
      network: networkEntrySchema,
      payoutAddress: z.string().max(100).optional(),
      startAtLogin: z.boolean(),
    })
    .strict(),
]);
export type AgentCommand = z.infer<typeof agentCommandSchema>;

/** What probeNetwork found: the coordinator's key (from its signed challenge) and the run it serves. */
export const networkProbeSchema = z
  .object({ url: z.string(), coordinatorKey: z.string(), runId: z.string() })
  .strict();
export type NetworkProbe = z.infer<typeof networkProbeSchema>;

export type CommandResult = { ok: true; probe?: NetworkProbe } | { ok: false; errors: string[] };

/** UI -> agent. `id` pairs the command with its result. */
export const clientMessageSchema = z.discriminatedUnion('type', [
  z
    .object({ type: z.literal('command'), id: z.string().min(1).max(64), command: agentCommandSchema })
    .strict(),
]);
export type ClientMessage = z.infer<typeof clientMessageSchema>;

/** Agent -> UI. The whole snapshot once, then only what changed (shared/dashboard/snapshot-changes.ts). */
export const serverMessageSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('snapshot'), snapshot: agentSnapshotSchema }).strict(),
  z
    .object({
      type: z.literal('changes'),
      fields: agentSnapshotSchema.omit({ loss: true }).partial(),
      lossTail: agentSnapshotSchema.shape.loss.optional(),
      lossLength: z.number().int().min(0).optional(),
    })
    .strict(),
  z
    .object({
      type: z.literal('commandResult'),
      id: z.string(),
      ok: z.boolean(),
      errors: z.array(z.string()).optional(),
      probe: networkProbeSchema.optional(),
    })
    .strict(),
  z.object({ type: z.literal('error'), error: z.string() }).strict(),
]);
export type ServerMessage = z.infer<typeof serverMessageSchema>;

/**
 * What the agent offers the processes that host it (the dashboard server, Electron's IPC): the same calls as
 * AgentBridge, but in-process, so the snapshot is read synchronously.
 */
export interface AgentHost {
  snapshot(): AgentSnapshot;
  onSnapshot(listener: (snapshot: AgentSnapshot) => void): () => void;
  command(command: AgentCommand): Promise<CommandResult>;
}

/** The API the Electron preload exposes to the renderer (window.tributary); the web dashboard mirrors it. */
export interface AgentBridge {
  snapshot(): Promise<AgentSnapshot>;
  onSnapshot(listener: (snapshot: AgentSnapshot) => void): () => void;
  command(command: AgentCommand): Promise<CommandResult>;
}
