import type { AgentSnapshot } from '../../shared/dashboard/contract.js';
import type { NodeStatus } from '../node/runtime.js';

function describe(snapshot: AgentSnapshot, node: NodeStatus): { headline: string; detail: string } {
  const stage = snapshot.stage
    ? `stage ${snapshot.stage.index + 1}/${snapshot.stage.count} (blocks ${snapshot.stage.firstBlock}-${snapshot.stage.lastBlock})`
    : 'no stage';
  const progress = snapshot.progress
    ? `step ${snapshot.progress.step}${snapshot.progress.totalSteps ? `/${snapshot.progress.totalSteps}` : ''}`
    : `step ${node.step}`;
  const temp = snapshot.telemetry.gpuTempC === null ? '' : `  ${snapshot.telemetry.gpuTempC.toFixed(0)} °C`;
  const loss = snapshot.loss.at(-1);
  const headline = `${snapshot.state}: ${snapshot.state === 'running' ? node.reason : snapshot.reason}`;
  const detail =
    `${stage}  ${progress}${loss ? `  loss ${loss.loss.toFixed(3)}` : ''}  duty ${snapshot.dutyCyclePct.toFixed(0)}%${temp}` +
    `  ${node.receipts} receipts  ${(node.creditedFlops / 1e12).toFixed(3)} TFLOP`;
  return { headline, detail };
}

/**
 * One line that says what the node is doing and why: rewritten in place on a terminal, printed only when the
 * state or its reason changes when output goes to a file or a journal.
 */
export function statusLine(out: NodeJS.WriteStream): {
  update: (snapshot: AgentSnapshot, node: NodeStatus) => void;
  finish: (message: string) => void;
} {
  let lastHeadline = '';
  let drawn = false;
  return {
    update(snapshot, node) {
      const { headline, detail } = describe(snapshot, node);
      if (out.isTTY) {
        const text = `${headline} | ${detail}`.slice(0, Math.max(20, (out.columns ?? 120) - 1));
        out.write(`\r\x1b[2K${text}`);
        drawn = true;
      } else if (headline !== lastHeadline) {
        out.write(`${headline} | ${detail}\n`);
      }
      lastHeadline = headline;
    },
    finish(message) {
      out.write(`${drawn ? '\n' : ''}${message}\n`);
      drawn = false;
    },
  };
}
