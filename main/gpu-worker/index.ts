import { serveGpuPort } from './loop.js';
import { GPU_PORT_MESSAGE } from './protocol.js';

// The worker's preload forwards main's MessagePort with a window message; only a message from this very
// window (the preload's isolated world posts on it) is accepted, and only the first port.
let served = false;
window.addEventListener('message', (event: MessageEvent) => {
  if (served || event.source !== window || event.data !== GPU_PORT_MESSAGE) return;
  const port = event.ports[0];
  if (!port) return;
  served = true;
  serveGpuPort(port, navigator.gpu);
});
