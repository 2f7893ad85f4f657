import { spawn } from 'node:child_process';
import { join } from 'node:path';
import type { BusyInterval, TimedValues } from './timed-stage.js';

export interface NodeReport {
  busy: Array<BusyInterval & { stage: number }>;
  /** Tensor payload bytes the node sent straight to other nodes (peer-to-peer runs). */
  peerBytes: number;
}

/**
 * A benchmark node process (timed-node.ts next to this file), with its own event loop, sockets, frames and
 * codec work; stop() returns its busy intervals and peer bytes. `p2pLink` shapes the connections its
 * neighbours dial to its libp2p host.
 */
export function timedNode(
  url: string,
  forwardMs: number,
  backwardMs: number,
  { values = 'zeros', p2pLink = 'none' }: { values?: TimedValues; p2pLink?: string } = {},
): { stop(): Promise<NodeReport> } {
  const child = spawn(
    process.execPath,
    [
      '--import',
      'tsx',
      join(import.meta.dirname, 'timed-node.ts'),
      url,
      `${forwardMs}`,
      `${backwardMs}`,
      values,
    ],
    { stdio: ['ignore', 'pipe', 'inherit'], env: { ...process.env, TRIBUTARY_BENCH_P2P_LINK: p2pLink } },
  );
  let out = '';
  child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  return {
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      return JSON.parse(out) as NodeReport;
    },
  };
}
