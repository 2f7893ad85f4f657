/**
 * One benchmark node in its own process: `node --import tsx scripts/bench/timed-node.ts URL FORWARD_MS
 * BACKWARD_MS [zeros|noise]` (what its boundary tensors hold, see TimedValues; zeros by default). It trains
 * whatever stage it is given on a TimedStage; on SIGTERM it stops and prints one JSON line
 * `{"busy":[{"stage","start","end"}],"peerBytes"}` with wall-clock times (ms since the epoch) of every forward
 * and backward, so the benchmark can measure each stage's bubble across processes. TRIBUTARY_BENCH_P2P_LINK
 * (RATE,DELAY as `tributary local --link` takes it) shapes the connections neighbours dial to its libp2p host.
 */
import { pino } from 'pino';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { parseLink } from '../../main/node/link-shaping.js';
import { NodeRuntime } from '../../main/node/runtime.js';
import { TimedStage, type BusyInterval, type TimedValues } from './timed-stage.js';

const [url, forwardMs, backwardMs, values = 'zeros'] = process.argv.slice(2);
if (!url || !Number(forwardMs) || !Number(backwardMs) || !['zeros', 'noise'].includes(values))
  throw new Error('usage: timed-node.ts ws://HOST:PORT FORWARD_MS BACKWARD_MS [zeros|noise]');
const stages: Array<{ index: number; intervals: BusyInterval[] }> = [];
const node = new NodeRuntime({
  coordinatorUrl: url,
  keys: Ed25519Keys.generate(),
  engine: 'cpu',
  logger: pino({ level: 'silent' }),
  p2pLink: parseLink(process.env.TRIBUTARY_BENCH_P2P_LINK ?? 'none'),
  createStage: async (_engine, spec) => {
    const intervals: BusyInterval[] = [];
    const stage = new TimedStage(
      spec.config,
      spec.range,
      spec.shape,
      Number(forwardMs),
      Number(backwardMs),
      intervals,
      values as TimedValues,
    );
    stages.push({ index: spec.range.index, intervals });
    return stage;
  },
});
node.start();
process.once('SIGTERM', () => {
  void node.stop().then(() => {
    const toEpoch = (t: number): number => performance.timeOrigin + t;
    const all = stages.flatMap((s) =>
      s.intervals.map((i) => ({ stage: s.index, start: toEpoch(i.start), end: toEpoch(i.end) })),
    );
    const peerBytes = node.status.peerBytes ?? 0;
    process.stdout.write(`${JSON.stringify({ busy: all, peerBytes })}\n`, () => process.exit(0));
  });
});
