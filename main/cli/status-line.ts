import type { AgentSnapshot } from '../../shared/dashboard/contract.js';
import { stageLabel } from '../../shared/stage-label.js';
import { relayedNeighbours } from '../node/peer-tensors.js';
import type { NodeStatus } from '../node/runtime.js';

function describe(snapshot: AgentSnapshot, node: NodeStatus): { headline: string; detail: string } {
  const stage = snapshot.stage ? stageLabel(snapshot.stage) : 'no stage';
  const progress = snapshot.progress
    ? `step ${snapshot.progress.step}${snapshot.progress.totalSteps ? `/${snapshot.progress.totalSteps}` : ''}`
    : `step ${node.step}`;
  const temp = snapshot.telemetry.gpuTempC === null ? '' : `  ${snapshot.telemetry.gpuTempC.toFixed(0)} °C`;
  const loss = snapshot.loss.at(-1);
  // The agent's one combined state (policy, GPU, network) in the words the dashboard and the tray show. The
  // reason is a whole sentence that already names the state ("Waiting: …", "Training stage 1 of 2 …"):
  // prefixing the state word again read as "waiting: Waiting: …".
  const headline = snapshot.reason;
  const { tokensPerSecond, flopsPerHour } = snapshot.rates;
  const rate =
    tokensPerSecond === null || flopsPerHour === null
      ? ''
      : `  ${tokensPerSecond.toFixed(1)} tok/s  ${(flopsPerHour / 1e12).toFixed(2)} TFLOP/h`;
  const detail =
    `${stage}  ${progress}${loss ? `  loss ${loss.loss.toFixed(3)}` : ''}  duty ${snapshot.dutyCyclePct.toFixed(0)}%${temp}` +
    `  ${node.receipts} receipts  ${(node.creditedFlops / 1e12).toFixed(3)} TFLOP${rate}${peers(node)}`;
  return { headline, detail };
}

/** Peer to peer: how many neighbours this node reaches directly and how many only through a relay. */
function peers(node: NodeStatus): string {
  const links = node.peerLinks ?? {};
  const total = Object.keys(links).length;
  if (total === 0) return '';
  const relayed = relayedNeighbours(links);
  const direct = total - relayed;
  return `  peers: ${direct} direct${relayed > 0 ? `, ${relayed} through a relay` : ''}`;
}

export interface StatusLineOptions {
  /** Without a terminal, the line is printed at least this often, so a log never looks stale. */
  everyMs?: number;
  now?: () => number;
}

/**
 * One line that says what the node is doing and why: rewritten in place on a terminal; when output goes to a
 * file or a journal, printed when the state or its reason changes and otherwise every `everyMs`.
 */
export function statusLine(
  out: Pick<NodeJS.WriteStream, 'write' | 'isTTY' | 'columns'>,
  options: StatusLineOptions = {},
): {
  update: (snapshot: AgentSnapshot, node: NodeStatus) => void;
  finish: (message: string) => void;
} {
  const everyMs = options.everyMs ?? 30_000;
  const now = options.now ?? Date.now;
  let lastHeadline = '';
  let lastPrinted = Number.NEGATIVE_INFINITY;
  let drawn = false;
  return {
    update(snapshot, node) {
      const { headline, detail } = describe(snapshot, node);
      if (out.isTTY) {
        const text = `${headline} | ${detail}`.slice(0, Math.max(20, (out.columns ?? 120) - 1));
        out.write(`\r\x1b[2K${text}`);
        drawn = true;
      } else if (headline !== lastHeadline || now() - lastPrinted >= everyMs) {
        out.write(`${headline} | ${detail}\n`);
        lastPrinted = now();
      }
      lastHeadline = headline;
    },
    finish(message) {
      out.write(`${drawn ? '\n' : ''}${message}\n`);
      drawn = false;
    },
  };
}
