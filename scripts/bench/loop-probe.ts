/**
 * Preloaded into the coordinator by bench-load (`--import`): measures the coordinator's own event-loop delay
 * over a window the bench opens and closes through the IPC channel, so the bench can tell time spent in the
 * coordinator from time spent in the simulated nodes.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { loopDelayReport } from './load-protocol.js';

const RESOLUTION_MS = 10;
const histogram = monitorEventLoopDelay({ resolution: RESOLUTION_MS });

process.on('message', (command: unknown) => {
  if (command === 'loop-delay:start') {
    histogram.reset();
    histogram.enable();
  } else if (command === 'loop-delay:stop') {
    histogram.disable();
    process.send?.({ loopDelay: loopDelayReport(histogram, RESOLUTION_MS) });
  }
});
