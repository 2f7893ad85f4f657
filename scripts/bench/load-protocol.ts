/** What the load bench (bench-load.ts) and its worker threads and coordinator probe say to each other. */
import type { monitorEventLoopDelay } from 'node:perf_hooks';

/** An event loop's delay in ms: how late a timer of the histogram's resolution fired. */
export interface LoopDelay {
  p50_ms: number;
  p99_ms: number;
  max_ms: number;
}

/** The histogram holds whole timer intervals; their excess over the resolution is the delay. */
export function loopDelayReport(
  histogram: ReturnType<typeof monitorEventLoopDelay>,
  resolutionMs: number,
): LoopDelay {
  const late = (ns: number): number => Number(Math.max(0, ns / 1e6 - resolutionMs).toFixed(2));
  return {
    p50_ms: late(histogram.percentile(50)),
    p99_ms: late(histogram.percentile(99)),
    max_ms: late(histogram.max),
  };
}

export type LoadWorkerRequest =
  /** Opens these nodes (their indices among all the bench's nodes); answered when all are welcomed. */
  | { type: 'connect'; url: string; indices: number[] }
  | { type: 'tally' }
  /** Every node pings once a second for `rounds` seconds from `startAt` (Date.now() time). */
  | { type: 'heartbeat'; rounds: number; startAt: number; total: number }
  | { type: 'close' };

export type LoadWorkerReply =
  | { type: 'connected' }
  | { type: 'tally'; placed: number; receipts: number; duplicated: number; statements: number }
  | { type: 'heartbeats'; samples: number[]; loopDelay: LoopDelay };
