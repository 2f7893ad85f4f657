import { contextBridge, ipcRenderer, type IpcRendererEvent } from 'electron';
import type {
  AgentBridge,
  AgentCommand,
  AgentSnapshot,
  CommandResult,
} from '../../shared/dashboard/contract.js';
import { IPC } from './channels.js';

/**
 * The renderer's whole view of main: the dashboard contract's three calls on fixed channels. No generic
 * send/invoke, and the IPC event (which carries the sender) never reaches the page. Bundled to CommonJS by
 * Vite, since sandboxed preloads can require nothing but 'electron'.
 */
const bridge: AgentBridge = {
  snapshot: () => ipcRenderer.invoke(IPC.snapshot) as Promise<AgentSnapshot>,
  onSnapshot(listener) {
    const forward = (_event: IpcRendererEvent, snapshot: AgentSnapshot): void => listener(snapshot);
    ipcRenderer.on(IPC.snapshotPushed, forward);
    return () => {
      ipcRenderer.removeListener(IPC.snapshotPushed, forward);
    };
  },
  command: (command: AgentCommand) => ipcRenderer.invoke(IPC.command, command) as Promise<CommandResult>,
};

contextBridge.exposeInMainWorld('tributary', bridge);
