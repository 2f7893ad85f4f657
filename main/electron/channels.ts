/**
 * The only IPC channels between main and our pages. The preload may use no others; main listens on no
 * others. Kept in one module the preload bundle inlines, so both sides cannot drift apart.
 */
export const IPC = {
  /** invoke: renderer asks for the whole AgentSnapshot; from then on main sends it what changes. */
  subscribe: 'tributary:subscribe',
  /** invoke: renderer sends an AgentCommand, gets a CommandResult. */
  command: 'tributary:command',
  /** send (main -> renderer): what changed since the last snapshot or changes sent to that window. */
  snapshotChanges: 'tributary:snapshot-changes',
  /** postMessage (main -> GPU worker): carries the worker's MessagePort. */
  gpuPort: 'tributary:gpu-port',
} as const;

/** Our pages live on a privileged custom scheme, not file://, so an origin check means something. */
export const APP_SCHEME = 'app';
export const RENDERER_HOST = 'tributary';
export const GPU_WORKER_HOST = 'gpu-worker';
export const RENDERER_ORIGIN = `${APP_SCHEME}://${RENDERER_HOST}`;
export const GPU_WORKER_ORIGIN = `${APP_SCHEME}://${GPU_WORKER_HOST}`;
export const RENDERER_URL = `${RENDERER_ORIGIN}/index.html`;
export const GPU_WORKER_URL = `${GPU_WORKER_ORIGIN}/index.html`;
