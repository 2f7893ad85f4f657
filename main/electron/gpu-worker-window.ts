import { BrowserWindow, MessageChannelMain } from 'electron';
import { GPU_WORKER_URL, IPC } from './channels.js';
import { GpuWorkerClient } from './gpu-worker-client.js';
import { gpuWorkerWindowOptions } from './window-options.js';

/**
 * Opens the hidden GPU worker window and hands its page one end of a MessageChannel. If Chromium's GPU or
 * renderer process dies, the page's device is lost; the caller sees the port close and may open a new worker.
 */
export async function openGpuWorker(
  preload: string,
): Promise<{ client: GpuWorkerClient; window: BrowserWindow }> {
  const worker = new BrowserWindow(gpuWorkerWindowOptions(preload));
  await worker.loadURL(GPU_WORKER_URL);
  const { port1, port2 } = new MessageChannelMain();
  const client = new GpuWorkerClient(port1);
  worker.webContents.postMessage(IPC.gpuPort, null, [port2]);
  worker.webContents.on('render-process-gone', (_event, details) =>
    client.close(`its process ended: ${details.reason}`),
  );
  worker.on('closed', () => client.close('its window closed'));
  return { client, window: worker };
}
