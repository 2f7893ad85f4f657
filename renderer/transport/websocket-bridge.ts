import {
  serverMessageSchema,
  type AgentCommand,
  type AgentSnapshot,
  type ClientMessage,
  type CommandResult,
} from '../../shared/dashboard/contract.js';
import { SnapshotReceiver } from '../../shared/dashboard/snapshot-changes.js';
import { Listeners } from './listeners.js';
import type { ConnectionState, UiBridge } from './types.js';

/** The parts of the browser the bridge needs; tests may hand in their own. */
export interface SocketEnvironment {
  createSocket(url: string): WebSocket;
  now(): number;
  setTimeout(callback: () => void, ms: number): unknown;
  /**
   * Whether the server refuses us for want of a token. A refused WebSocket upgrade looks to the page like a
   * server that is down (close code 1006), so the bridge asks over HTTP, where the status is visible.
   */
  isUnauthorized(): Promise<boolean>;
}

export function browserSocketEnvironment(location: Location): SocketEnvironment {
  return {
    createSocket: (url) => new WebSocket(url),
    now: () => Date.now(),
    setTimeout: (callback, ms) => window.setTimeout(callback, ms),
    isUnauthorized: () =>
      fetch(new URL('api/snapshot', location.href), { credentials: 'same-origin', cache: 'no-store' }).then(
        (response) => response.status === 401,
        () => false,
      ),
  };
}

const COMMAND_TIMEOUT_MS = 15_000;
const FIRST_RETRY_MS = 1_000;
const MAX_RETRY_MS = 15_000;

interface Pending {
  resolve: (result: CommandResult) => void;
}

/**
 * The agent's bridge over the local dashboard server's WebSocket. Reconnects with backoff; a command sent while
 * disconnected fails at once with a reason rather than queueing, so a click never acts minutes later.
 */
export function createWebSocketBridge(
  url: string,
  env: SocketEnvironment,
  ledgerCsvUrl: string | null,
): UiBridge {
  const snapshots = new Listeners<AgentSnapshot>();
  const connections = new Listeners<ConnectionState>();
  const pending = new Map<string, Pending>();
  /** Each connection starts with a whole snapshot, so one receiver serves every reconnect. */
  const received = new SnapshotReceiver();
  let waitingForFirst: ((snapshot: AgentSnapshot) => void)[] = [];
  let state: ConnectionState = { kind: 'connecting' };
  let socket: WebSocket | null = null;
  let retryMs = FIRST_RETRY_MS;
  let nextId = 1;

  const setState = (next: ConnectionState): void => {
    state = next;
    connections.emit(next);
  };

  const settleAll = (reason: string): void => {
    for (const { resolve } of pending.values()) resolve({ ok: false, errors: [reason] });
    pending.clear();
  };

  const onMessage = (data: unknown): void => {
    if (typeof data !== 'string') return;
    let json: unknown;
    try {
      json = JSON.parse(data);
    } catch {
      return;
    }
    const parsed = serverMessageSchema.safeParse(json);
    if (!parsed.success) {
      console.warn(
        'tributary: ignored a message that does not match the dashboard contract',
        parsed.error.issues,
      );
      return;
    }
    const message = parsed.data;
    if (message.type === 'snapshot' || message.type === 'changes') {
      const snapshot = received.receive(message);
      if (!snapshot) return;
      const waiters = waitingForFirst;
      waitingForFirst = [];
      for (const waiter of waiters) waiter(snapshot);
      snapshots.emit(snapshot);
    } else if (message.type === 'commandResult') {
      const entry = pending.get(message.id);
      pending.delete(message.id);
      entry?.resolve(
        message.ok
          ? { ok: true, ...(message.probe ? { probe: message.probe } : {}) }
          : { ok: false, errors: message.errors ?? ['the agent refused'] },
      );
    } else {
      console.warn(`tributary: agent error: ${message.error}`);
    }
  };

  const connect = (): void => {
    setState({ kind: 'connecting' });
    const ws = env.createSocket(url);
    socket = ws;
    let opened = false;
    ws.addEventListener('open', () => {
      retryMs = FIRST_RETRY_MS;
      opened = true;
      setState({ kind: 'open' });
    });
    ws.addEventListener('message', (event) => onMessage(event.data));
    ws.addEventListener('close', () => {
      socket = null;
      settleAll('Lost the connection to the agent before it answered.');
      void (opened ? Promise.resolve(false) : env.isUnauthorized()).then((unauthorized) => {
        if (unauthorized) {
          setState({
            kind: 'unauthorized',
            reason:
              'The agent refused this page: open the dashboard with the link it printed (the link holds the token).',
          });
          return;
        }
        const delay = retryMs;
        retryMs = Math.min(retryMs * 2, MAX_RETRY_MS);
        setState({ kind: 'closed', reason: 'Cannot reach the Tributary agent.', retryAt: env.now() + delay });
        env.setTimeout(connect, delay);
      });
    });
  };

  connect();

  return {
    snapshot: () =>
      received.latest
        ? Promise.resolve(received.latest)
        : new Promise((resolve) => waitingForFirst.push(resolve)),
    onSnapshot: (listener) => snapshots.add(listener),
    connection: () => state,
    ledgerCsvUrl,
    onConnection: (listener) => connections.add(listener),
    command(command: AgentCommand): Promise<CommandResult> {
      if (!socket || state.kind !== 'open') {
        return Promise.resolve({ ok: false, errors: ['Not connected to the agent; try again in a moment.'] });
      }
      const id = String(nextId++);
      const message: ClientMessage = { type: 'command', id, command };
      const ws = socket;
      return new Promise((resolve) => {
        pending.set(id, { resolve });
        env.setTimeout(() => {
          if (pending.delete(id)) resolve({ ok: false, errors: ['The agent did not answer in time.'] });
        }, COMMAND_TIMEOUT_MS);
        ws.send(JSON.stringify(message));
      });
    },
  };
}
