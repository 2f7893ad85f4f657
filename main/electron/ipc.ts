import { agentCommandSchema, type AgentHost, type AgentSnapshot } from '../../shared/dashboard/contract.js';
import { IPC } from './channels.js';
import type { FrameLike } from './sender-check.js';

export interface InvokeEventLike {
  senderFrame: FrameLike | null;
}

/** The parts of Electron's ipcMain used; tests pass a fake. */
export interface IpcMainLike {
  handle(channel: string, handler: (event: InvokeEventLike, ...args: unknown[]) => unknown): void;
  removeHandler(channel: string): void;
}

/** Where pushed snapshots go: the renderer windows that are open now. */
export interface SnapshotTarget {
  send(channel: string, snapshot: AgentSnapshot): void;
  isTrusted(): boolean;
}

export class UntrustedSenderError extends Error {
  constructor(channel: string, url: string | undefined) {
    super(`refused IPC on ${channel} from ${url ?? 'an unknown frame'}`);
    this.name = 'UntrustedSenderError';
  }
}

/**
 * The renderer's only way into main: two invoke channels, each checking that the sender is the top frame of
 * our bundle, and each validating what it receives. Snapshots go out to trusted windows only.
 */
export function registerAgentIpc(
  ipcMain: IpcMainLike,
  agent: AgentHost,
  isTrusted: (frame: FrameLike | null) => boolean,
  targets: () => SnapshotTarget[],
): () => void {
  const guard = (channel: string, event: InvokeEventLike): void => {
    if (!isTrusted(event.senderFrame)) throw new UntrustedSenderError(channel, event.senderFrame?.url);
  };

  ipcMain.handle(IPC.snapshot, (event) => {
    guard(IPC.snapshot, event);
    return agent.snapshot();
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
  const unsubscribe = agent.onSnapshot((snapshot) => {
    for (const target of targets()) if (target.isTrusted()) target.send(IPC.snapshotPushed, snapshot);
  });

  return () => {
    unsubscribe();
    ipcMain.removeHandler(IPC.snapshot);
    ipcMain.removeHandler(IPC.command);
  };
}
