import { contextBridge, ipcRenderer } from 'electron';
import { createPreloadBridge } from './preload-bridge.js';

/**
 * The renderer's whole view of main: the dashboard contract's three calls on fixed channels. No generic
 * send/invoke, and the IPC event (which carries the sender) never reaches the page. Bundled to CommonJS by
 * Vite, since sandboxed preloads can require nothing but 'electron'.
 */
contextBridge.exposeInMainWorld('tributary', createPreloadBridge(ipcRenderer));
