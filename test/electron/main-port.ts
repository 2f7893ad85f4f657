import type { MainPortLike } from '../../main/electron/gpu-worker-client.js';

/** Main's MessagePortMain, played by one end of a real MessageChannel. */
export function asMainPort(port: MessagePort): MainPortLike {
  return {
    postMessage: (message) => port.postMessage(message),
    on: (event: 'message' | 'close', listener: (event: { data: unknown }) => void) =>
      port.addEventListener(event, (e) => listener(e as MessageEvent)),
    start: () => port.start(),
    close: () => port.close(),
  };
}
