/**
 * One worker thread of the load bench: it holds a share of the simulated nodes, so that 1,000 of them do not
 * queue behind one event loop, and measures their heartbeats and its own event-loop delay.
 */
import { monitorEventLoopDelay } from 'node:perf_hooks';
import { parentPort } from 'node:worker_threads';
import { LightNode } from './light-node.js';
import { loopDelayReport, type LoadWorkerReply, type LoadWorkerRequest } from './load-protocol.js';

const port = parentPort!;
const reply = (message: LoadWorkerReply): void => port.postMessage(message);
const progress = (line: string): void => void process.stderr.write(`${line}\n`);
/** Each node with its place among all the bench's nodes, which sets its slot within the heartbeat second. */
const nodes: Array<{ node: LightNode; index: number }> = [];

async function heartbeat(rounds: number, startAt: number, total: number): Promise<void> {
  const loopDelay = monitorEventLoopDelay({ resolution: 10 });
  const samples: number[] = [];
  await new Promise((r) => setTimeout(r, Math.max(0, startAt - Date.now())));
  loopDelay.enable();
  let roundStart = startAt;
  for (let round = 0; round < rounds; round++) {
    // Heartbeats spread over the second, as independent nodes send them (not all in one burst).
    samples.push(
      ...(await Promise.all(
        nodes.map(({ node, index }) =>
          new Promise((r) =>
            setTimeout(r, Math.max(0, roundStart + (index * 1000) / total - Date.now())),
          ).then(() => node.ping()),
        ),
      )),
    );
    roundStart = Math.max(Date.now(), roundStart + 1000);
  }
  loopDelay.disable();
  reply({ type: 'heartbeats', samples, loopDelay: loopDelayReport(loopDelay, 10) });
}

port.on('message', (request: LoadWorkerRequest) => {
  switch (request.type) {
    case 'connect': {
      const wave = request.indices.map((index) => ({ node: new LightNode(request.url, progress), index }));
      nodes.push(...wave);
      void Promise.all(wave.map((n) => n.node.welcomed)).then(() => reply({ type: 'connected' }));
      return;
    }
    case 'tally': {
      let receipts = 0;
      let duplicated = 0;
      for (const { node } of nodes) {
        receipts += node.receipts.size;
        for (const count of node.receipts.values()) if (count > 1) duplicated++;
      }
      reply({
        type: 'tally',
        placed: nodes.filter((n) => n.node.placed).length,
        receipts,
        duplicated,
        statements: nodes.reduce((sum, n) => sum + n.node.statements, 0),
      });
      return;
    }
    case 'heartbeat':
      void heartbeat(request.rounds, request.startAt, request.total);
      return;
    case 'close':
      for (const { node } of nodes) node.close();
      port.close();
      return;
  }
});
