import { agentCommandSchema, type AgentHost, type AgentSnapshot } from '../../shared/dashboard/contract.js';
import { SnapshotSender, type SnapshotMessage } from '../../shared/dashboard/snapshot-changes.js';
import { IPC } from './channels.js';
import type { FrameLike } from './sender-check.js';

/** The parts of Electron's WebContents used: where a window's changes go, and when it is gone. */
export interface WebContentsLike {
  readonly id: number;
  readonly mainFrame: FrameLike | null;
  send(channel: string, message: SnapshotMessage): void;
  isDestroyed(): boolean;
  once(event: 'destroyed', listener: () => void): void;
}

export interface InvokeEventLike {
  senderFrame: FrameLike | null;
  sender: WebContentsLike;
}

/** The parts of Electron's ipcMain used; tests pass a fake. */
export interface IpcMainLike {
  handle(channel: string, handler: (event: InvokeEventLike, ...args: unknown[]) => unknown): void;
  removeHandler(channel: string): void;
}

export class UntrustedSenderError extends Error {
  constructor(channel: string, url: string | undefined) {
    super(`refused IPC on ${channel} from ${url ?? 'an unknown frame'}`);
    this.name = 'UntrustedSenderError';
  }
}

/**
 * The renderer's only way into main: two invoke channels, each checking that the sender is the top frame of
 * our bundle, and each validating what it receives. A window that subscribes gets the whole snapshot once,
 * then only what changed (the same SnapshotSender as the dashboard's WebSocket), and only while it still
 * shows our bundle.
 */
export function registerAgentIpc(
  ipcMain: IpcMainLike,
  agent: AgentHost,
  isTrusted: (frame: FrameLike | null) => boolean,
): () => void {
  const guard = (channel: string, event: InvokeEventLike): void => {
    if (!isTrusted(event.senderFrame)) throw new UntrustedSenderError(channel, event.senderFrame?.url);
  };
  const subscribers = new Map<number, { contents: WebContentsLike; stream: SnapshotSender }>();

  ipcMain.handle(IPC.subscribe, (event) => {
    guard(IPC.subscribe, event);
    const contents = event.sender;
    let subscriber = subscribers.get(contents.id);
    if (!subscriber) {
      subscriber = { contents, stream: new SnapshotSender() };
      subscribers.set(contents.id, subscriber);
      contents.once('destroyed', () => subscribers.delete(contents.id));
    }
    // A page that subscribes again (reloaded) starts over from a whole snapshot.
    subscriber.stream.restart();
    return subscriber.stream.message(agent.snapshot());
  });
  ipcMain.handle(IPC.command, async (event, raw) => {
    guard(IPC.command, event);
    const parsed = agentCommandSchema.safeParse(raw);
    if (!parsed.success) {
      return {
        ok: false,
        errors: parsed.error.issues.map((i) => `${i.path.join('.') || 'command'}: ${i.message}`),
      };
    }
    return agent.command(parsed.data);
  });
  const unsubscribe = agent.onSnapshot((snapshot: AgentSnapshot) => {
    for (const [id, { contents, stream }] of subscribers) {
      // A window that navigated away from our bundle gets nothing more, even if it comes back unasked.
      if (contents.isDestroyed() || !isTrusted(contents.mainFrame)) {
        subscribers.delete(id);
        continue;
      }
      const message = stream.message(snapshot);
      if (message) contents.send(IPC.snapshotChanges, message);
    }
  });

  return () => {
    unsubscribe();
    subscribers.clear();
    ipcMain.removeHandler(IPC.subscribe);
    ipcMain.removeHandler(IPC.command);
  };
}
