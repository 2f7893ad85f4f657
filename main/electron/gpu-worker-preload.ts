import { ipcRenderer } from 'electron';
import { GPU_PORT_MESSAGE } from '../gpu-worker/protocol.js';
import { IPC } from './channels.js';

// Hands the page main's MessagePort, once; the page talks to main over that port only. The message goes to
// this very window (targetOrigin '*' names no other), and the page accepts it only from itself.
ipcRenderer.once(IPC.gpuPort, (event) => {
  window.postMessage(GPU_PORT_MESSAGE, '*', event.ports);
});
