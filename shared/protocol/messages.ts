import { z } from 'zod';
import { signedCreditStatementSchema } from './credit-statement.js';
import { signedReceiptSchema } from './receipt.js';

/**
 * The control messages of the coordinator <-> node protocol. Every message is one JSON text frame; messages
 * that carry tensors announce how many (`tensors`) and are followed by exactly that many binary tensor frames
 * (frame.ts) with the same `id`.
 */
export const PROTOCOL_VERSION = 1;

const hex32 = z.string().regex(/^[0-9a-f]{64}$/);
const base64 = z.string().regex(/^[A-Za-z0-9+/]+={0,2}$/);
const count = z
  .number()
  .int()
  .min(0)
  .max(2 ** 31);
const positive = z
  .number()
  .int()
  .min(1)
  .max(1 << 20);
const finite = z.number().finite();
/** Which boundary tensor of the run: a micro-batch's activations (forward) or gradient (backward). */
const boundaryTensor = {
  step: count,
  attempt: count,
  microBatch: count,
  direction: z.enum(['forward', 'backward']),
};
/** A day in ms: the longest wait the protocol names. */
export const DAY_MS = 86_400_000;

export const engineKindSchema = z.enum(['gpu', 'cpu']);
export type EngineKind = z.infer<typeof engineKindSchema>;

export const gptConfigSchema = z
  .object({
    vocabSize: positive,
    contextLength: positive,
    width: positive,
    heads: positive,
    layers: positive,
    mlpRatio: positive,
  })
  .strict();

export const stageRangeSchema = z
  .object({ index: count, count: positive, firstBlock: count, endBlock: count })
  .strict()
  .refine((r) => r.index < r.count && r.firstBlock < r.endBlock, 'stage range is empty or out of order');

export const microBatchShapeSchema = z.object({ batch: positive, seq: positive }).strict();

export const adamWSchema = z
  .object({
    learningRate: finite.nonnegative(),
    beta1: finite.min(0).max(1),
    beta2: finite.min(0).max(1),
    eps: finite.positive(),
    weightDecay: finite.nonnegative(),
  })
  .strict();

export const constrainedBlocksSchema = z.enum(['beforeLastStage', 'all']);
export const positionPartSchema = z.enum(['fixed', 'subspace']);

/**
 * The run's boundary codec. The name is any short string here, so that a node can refuse, in words, a codec
 * it does not know (shared/protocol/codec-registry.ts) instead of failing the schema.
 */
export const compressionSchema = z
  .object({
    codec: z.string().min(1).max(32),
    rank: positive,
    constrainedBlocks: constrainedBlocksSchema,
    positions: positionPartSchema,
  })
  .strict();

/** Fields every message has: protocol version, a sender-chosen id (ties tensor frames to it), tensor count. */
const envelope = {
  v: z.literal(PROTOCOL_VERSION),
  id: z.number().int().min(0).max(0xffffffff),
  tensors: z.number().int().min(0).max(8),
};

const msg = <T extends string, S extends z.ZodRawShape>(type: T, shape: S) =>
  z.object({ ...envelope, type: z.literal(type), ...shape }).strict();

/**
 * Task kinds: `forwardBackward` is the last stage, which computes the loss and its gradient at once;
 * `evaluate` is the last stage's forward and loss alone (held-out validation: no gradient, no backward).
 */
export const taskKindSchema = z.enum(['forward', 'forwardBackward', 'backward', 'evaluate']);
export type TaskKind = z.infer<typeof taskKindSchema>;

// --- node -> coordinator -------------------------------------------------------------------------------
export const helloSchema = msg('hello', {
  nodeId: hex32,
  client: z.string().min(1).max(64),
  engine: engineKindSchema,
  /** Receipts with a sequence number above this are (re)sent after authentication. */
  receiptCursor: count,
  /** Credit statements with a number above this are (re)sent after authentication; absent means all. */
  statementCursor: count.optional(),
  /** A fresh nonce the coordinator signs in its challenge, proving it holds the key it shows. */
  nonce: base64.max(64).optional(),
});
export const authSchema = msg('auth', { signature: base64.max(128) });
/** Where a node's libp2p host listens (runs whose tensors go peer to peer): its peer id and multiaddrs. */
export const p2pAddressSchema = z
  .object({
    peerId: z.string().regex(/^[1-9A-HJ-NP-Za-km-z]{32,64}$/),
    addrs: z.array(z.string().min(1).max(256)).min(1).max(8),
  })
  .strict();
export type P2pAddress = z.infer<typeof p2pAddressSchema>;
/**
 * Ask for a stage; lightweight clients (dashboards, probes) never send it and never get work. In a
 * peer-to-peer run a node says where its libp2p host listens.
 */
export const joinSchema = msg('join', { p2p: p2pAddressSchema.optional() });
/**
 * A task's outcome. In a peer-to-peer run its output tensor went to the next peer instead, and `sent`
 * summarises it (computed by the sender) so the coordinator still refuses non-finite or absurd values.
 */
export const resultSchema = msg('result', {
  taskId: count,
  loss: finite.optional(),
  busyMs: finite.nonnegative(),
  /** How long the task waited at the node before its compute began (behind other work, or for its input). */
  queuedMs: finite.nonnegative().optional(),
  sent: z.object({ finite: z.boolean(), maxAbs: finite.nonnegative() }).strict().optional(),
  /**
   * Mixed precision: the scaled backward overflowed f16 (NaN or Inf); no tensor follows. The coordinator
   * halves the loss scale and replays the step.
   */
  overflow: z.literal(true).optional(),
});
/**
 * The input of a task that came peer to peer was bad, or never came: the coordinator settles it with the
 * sender (coordinator.ts onBadInput).
 */
export const badInputSchema = msg('badInput', { taskId: count, reason: z.string().max(500) });
/**
 * The tensor this node was to send peer to peer for a micro-batch could not be sent (its consumer cannot be
 * reached): the coordinator relays the two nodes' tensors from then on.
 */
export const sendFailedSchema = msg('sendFailed', {
  ...boundaryTensor,
  reason: z.string().max(500),
});
/**
 * The tensor this node sent peer to peer for a micro-batch of the current attempt, attached where it still
 * holds it (`held`); asked for when its consumer left and a replica redoes the consumer's part.
 */
export const fetchedSchema = msg('fetched', {
  ...boundaryTensor,
  held: z.boolean(),
});
/**
 * A stage's accumulated gradient (attached), or where the coordinator asked for a summary (the stage's only
 * replica, which applies its own gradient), its values' summary and squared sum for the global clip norm.
 */
export const gradsSchema = msg('grads', {
  step: count,
  attempt: count,
  summary: z
    .object({ finite: z.boolean(), maxAbs: finite.nonnegative(), squaredSum: finite.nonnegative() })
    .strict()
    .optional(),
});
export const appliedSchema = msg('applied', { step: count, optimizerStep: count });
/**
 * The assigned stage is loaded and ready for tasks; `stashes` is how many micro-batches it can hold between
 * forward and backward (1F1B), from its memory estimate and the VRAM cap.
 */
export const loadedSchema = msg('loaded', { step: count, stashes: positive.max(1024).optional() });
export const stateSchema = msg('state', { requestId: count, optimizerStep: count });
export const pingSchema = msg('ping', { sentAt: finite });
/** Where this node's credit is paid: an EVM address (the agent checks its EIP-55 checksum). */
export const payoutSchema = msg('payout', { address: z.string().regex(/^0x[0-9a-fA-F]{40}$/) });

// --- coordinator -> node -------------------------------------------------------------------------------
export const challengeSchema = msg('challenge', {
  nonce: base64.max(64),
  coordinatorKey: hex32,
  runId: z.string().max(128),
  /** Where the hello carried a nonce: the coordinator's ed25519 signature of coordinatorProofBytes. */
  signature: base64.max(128).optional(),
});
export const welcomeSchema = msg('welcome', {
  runId: z.string().max(128),
  model: gptConfigSchema,
  shape: microBatchShapeSchema,
  stages: positive,
  seed: z.number().int(),
  compression: compressionSchema,
  /** 'p2p': activations and their gradients go between nodes over libp2p; absent means through the coordinator. */
  dataPlane: z.enum(['relay', 'p2p']).optional(),
  /** 'mixed': f16 operands, f32 accumulation, the coordinator's dynamic loss scale; absent means fp32. */
  precision: z.enum(['fp32', 'mixed']).optional(),
  /**
   * Peer to peer: how long a task waits for its input before reporting that it never came; under the
   * coordinator's task timeout, so the waiting node is never the one found silent.
   */
  inputTimeoutMs: z.number().int().min(1).max(DAY_MS).optional(),
  /** Peer to peer: the coordinator's circuit relay v2, which a node also listens through. */
  p2pRelay: z.array(z.string().min(1).max(256)).min(1).max(8).optional(),
});
/** Load this stage with the attached state (params, m, v, flattened in parameter order). */
export const assignSchema = msg('assign', {
  range: stageRangeSchema,
  optimizerStep: count,
  step: count,
});
export const taskSchema = msg('task', {
  taskId: count,
  kind: taskKindSchema,
  step: count,
  attempt: count,
  microBatch: count,
  lossScale: finite,
  /**
   * A forward (or the last stage's `evaluate`) recomputed only so the coordinator can compare it with
   * another replica's: nothing is stashed and no backward follows.
   */
  verifyOnly: z.literal(true).optional(),
  /** Peer-to-peer runs: send the output tensor to this peer instead of returning it. */
  sendTo: p2pAddressSchema.optional(),
  /** Peer-to-peer runs: the boundary input comes from this peer (its libp2p peer id), not with the task. */
  inputFrom: p2pAddressSchema.shape.peerId.optional(),
});
/** The current attempt of `step` failed (a peer left): drop its pending work and zero the gradients. */
export const abortSchema = msg('abort', { step: count, attempt: count });
/** Send the stage's gradient, or with `summary` only its summary (the stage has no other replica). */
export const gradsRequestSchema = msg('gradsRequest', {
  step: count,
  attempt: count,
  summary: z.boolean().optional(),
});
/**
 * Replace the gradients with the attached sum over replicas, then take an AdamW step; with `own`, nothing
 * is attached and the stage's only replica steps on the gradient it accumulated.
 */
export const applySchema = msg('apply', {
  step: count,
  clipScale: finite.nonnegative(),
  adamw: adamWSchema,
  sendState: z.boolean(),
  own: z.boolean().optional(),
});
export const stateRequestSchema = msg('stateRequest', { requestId: count });
/** Send back the tensor sent peer to peer for this micro-batch (answered with `fetched`). */
export const fetchSchema = msg('fetch', boundaryTensor);
export const receiptMessageSchema = msg('receipt', { seq: count, signed: signedReceiptSchema });
/** The coordinator's signed credit statement: receipts it confirmed or revoked (credit-statement.ts). */
export const creditsMessageSchema = msg('credits', { signed: signedCreditStatementSchema });
export const pongSchema = msg('pong', { sentAt: finite });
/** What the run is doing and why, in words a person can read (sent when it changes). */
export const runStateSchema = msg('runState', {
  state: z.enum(['waiting', 'training', 'done']),
  reason: z.string().max(500),
});
/** The most loss points one `progress` message carries (the newest ones, right after `welcome`). */
export const MAX_PROGRESS_LOSSES = 2000;
/**
 * How far the run is, pushed to nodes after `welcome`, after every committed step, and at most once a second
 * within a step, so a node's dashboard follows the run without polling the coordinator's HTTP API.
 */
export const runProgressSchema = msg('progress', {
  step: count,
  steps: count,
  microBatches: z.object({ done: count, total: count }).strict(),
  /** The whole network's training speed. */
  tokensPerSecond: finite.nonnegative(),
  /** Steps committed since the last `progress` to this node, oldest first. */
  losses: z.array(z.object({ step: count, loss: finite }).strict()).max(MAX_PROGRESS_LOSSES),
  /**
   * Held-out validation losses measured since the last `progress` (all of them right after `welcome`), each
   * at the index of the step whose weights it measured, as in `losses`.
   */
  validation: z
    .array(z.object({ step: count, loss: finite }).strict())
    .max(MAX_PROGRESS_LOSSES)
    .optional(),
});
export type RunProgress = z.infer<typeof runProgressSchema>;

// --- both ways ---------------------------------------------------------------------------------------------
export const errorSchema = msg('error', { code: z.string().max(64), message: z.string().max(2000) });

export const nodeMessageSchema = z.discriminatedUnion('type', [
  helloSchema,
  authSchema,
  joinSchema,
  resultSchema,
  gradsSchema,
  appliedSchema,
  loadedSchema,
  stateSchema,
  pingSchema,
  payoutSchema,
  badInputSchema,
  sendFailedSchema,
  fetchedSchema,
  errorSchema,
]);
export type NodeMessage = z.infer<typeof nodeMessageSchema>;

export const coordinatorMessageSchema = z.discriminatedUnion('type', [
  challengeSchema,
  welcomeSchema,
  assignSchema,
  taskSchema,
  abortSchema,
  gradsRequestSchema,
  applySchema,
  stateRequestSchema,
  fetchSchema,
  receiptMessageSchema,
  creditsMessageSchema,
  pongSchema,
  runStateSchema,
  runProgressSchema,
  errorSchema,
]);
export type CoordinatorMessage = z.infer<typeof coordinatorMessageSchema>;

/** What travels on a libp2p tensor stream: one boundary tensor of one micro-batch. */
export const peerTensorSchema = msg('tensor', boundaryTensor);
export type PeerTensor = z.infer<typeof peerTensorSchema>;

/** A message as a sender writes it: the envelope (v, id, tensors) is filled in by the encoder. */
export type Outgoing<M> = M extends unknown ? Omit<M, 'v' | 'id' | 'tensors'> : never;
