import { describe, expect, it } from 'vitest';
import type { AgentSnapshot } from '../../shared/dashboard/contract.js';
import { defaultSettings } from '../../shared/dashboard/settings.js';
import { statusLine } from '../../main/cli/status-line.js';
import type { NodeStatus } from '../../main/node/runtime.js';

const snapshot = {
  state: 'running',
  reason: 'Contributing',
  dutyCyclePct: 100,
  telemetry: { gpuTempC: null },
  stage: { index: 1, count: 2, firstBlock: 2, lastBlock: 3 },
  progress: { step: 4, stepFraction: 0, totalSteps: 30 },
  loss: [{ step: 4, loss: 4.25 }],
  settings: defaultSettings,
  rates: { tokensPerSecond: null, flopsPerHour: null },
} as unknown as AgentSnapshot;
const node: NodeStatus = {
  connected: true,
  stage: null,
  step: 4,
  receipts: 7,
  creditedFlops: 2e12,
  reason: 'training stage 2 of 2 (blocks 3–4)',
};

function pipe(): { lines: string[]; out: { write: (s: string) => boolean; isTTY: false; columns: number } } {
  const lines: string[] = [];
  return { lines, out: { write: (s) => lines.push(s) > 0, isTTY: false, columns: 80 } };
}

describe('the node status line without a terminal', () => {
  it('is printed on a change and again every interval, so a log never goes stale', () => {
    let now = 0;
    const { lines, out } = pipe();
    const line = statusLine(out, { everyMs: 30_000, now: () => now });
    line.update(snapshot, node);
    expect(lines).toEqual([
      'Contributing | stage 2 of 2 (blocks 3–4)  step 4/30  loss 4.250  duty 100%  7 receipts  2.000 TFLOP\n',
    ]);
    now = 29_000;
    line.update(snapshot, node);
    expect(lines).toHaveLength(1);
    now = 30_000;
    line.update(snapshot, node);
    expect(lines).toHaveLength(2);
    now = 30_001;
    line.update({ ...snapshot, state: 'paused', reason: 'Paused by you' }, node);
    expect(lines).toHaveLength(3);
  });

  it('says, peer to peer, how many neighbours it reaches directly and how many through a relay', () => {
    const { lines, out } = pipe();
    const line = statusLine(out, { everyMs: 0 });
    line.update(snapshot, { ...node, peerLinks: { a: { in: 'direct', out: 'direct' } } });
    line.update(snapshot, { ...node, peerLinks: { a: { in: 'direct' }, b: { out: 'relay' } } });
    expect(lines.map((l) => l.slice(l.indexOf('TFLOP') + 5).trim())).toEqual([
      'peers: 1 direct',
      'peers: 1 direct, 1 through a relay',
    ]);
  });

  it("prints the agent's one combined state, and the node's pace once it is measured", () => {
    const { lines, out } = pipe();
    statusLine(out).update(
      {
        ...snapshot,
        state: 'waiting',
        reason: 'Waiting for idle; cannot reach the coordinator at ws://127.0.0.1:9 (ECONNREFUSED)',
        stage: null,
        rates: { tokensPerSecond: 41.25, flopsPerHour: 3.6e12 },
      },
      { ...node, connected: false },
    );
    expect(lines[0]).toMatch(/^Waiting for idle; cannot reach the coordinator at ws:\/\/127\.0\.0\.1:9/);
    expect(lines[0]).toMatch(/\| no stage {2}step 4/);
    expect(lines[0]).toMatch(/41\.3 tok\/s {2}3\.60 TFLOP\/h\n$/);
  });
});
