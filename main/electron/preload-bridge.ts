import type {
  AgentBridge,
  AgentCommand,
  AgentSnapshot,
  CommandResult,
} from '../../shared/dashboard/contract.js';
import { SnapshotReceiver, type SnapshotMessage } from '../../shared/dashboard/snapshot-changes.js';
import { IPC } from './channels.js';

/** The parts of Electron's ipcRenderer the bridge uses; tests connect a fake one to registerAgentIpc. */
export interface IpcRendererLike {
  invoke(channel: string, ...args: unknown[]): Promise<unknown>;
  on(channel: string, listener: (event: unknown, message: SnapshotMessage) => void): void;
}

/**
 * The preload's side of the contract: subscribes once (main answers with the whole snapshot), then rebuilds
 * every later snapshot from the changes main sends, so the renderer sees whole snapshots as before. Kept out
 * of preload.ts so it runs without Electron.
 */
export function createPreloadBridge(ipc: IpcRendererLike): AgentBridge {
  const received = new SnapshotReceiver();
  const listeners = new Set<(snapshot: AgentSnapshot) => void>();
  let subscribed: Promise<AgentSnapshot> | null = null;
  const deliver = (message: SnapshotMessage): AgentSnapshot | null => {
    const snapshot = received.receive(message);
    if (snapshot) for (const listener of listeners) listener(snapshot);
    return snapshot;
  };
  ipc.on(IPC.snapshotChanges, (_event, message) => void deliver(message));
  const subscribe = (): Promise<AgentSnapshot> =>
    (subscribed ??= ipc.invoke(IPC.subscribe).then(
      (message) => deliver(message as SnapshotMessage)!,
      (error: unknown) => {
        subscribed = null;
        throw error;
      },
    ));
  return {
    snapshot: () => (received.latest ? Promise.resolve(received.latest) : subscribe()),
    onSnapshot(listener) {
      listeners.add(listener);
      // A refusal surfaces where the page asks for the snapshot itself.
      subscribe().catch(() => undefined);
      return () => {
        listeners.delete(listener);
      };
    },
    command: (command: AgentCommand) => ipc.invoke(IPC.command, command) as Promise<CommandResult>,
  };
}
