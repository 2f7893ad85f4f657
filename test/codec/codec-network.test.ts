import { afterAll, describe, expect, test } from 'vitest';
import { WebSocketServer } from 'ws';
import {
  coordinatorMessageSchema,
  nodeMessageSchema,
  type NodeMessage,
} from '../../shared/protocol/messages.js';
import { Ed25519Keys } from '../../main/identity/ed25519.js';
import { coordinatorProofBytes } from '../../shared/protocol/auth.js';
import { resolveCodec } from '../../shared/protocol/codec-registry.js';
import { encodeMessage, WireReader } from '../../shared/protocol/wire.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from '../network/helpers.js';
import { until } from '../network/processes.js';
import { RawClient } from '../network/raw-client.js';

const { dir, cleanup } = tempDir();
afterAll(cleanup);

const boundary = { batch: 2, seq: 16, width: 32 };

describe('a 2-stage run carries each codec end to end', () => {
  for (const codec of ['int8', 'subspace'] as const) {
    test(
      `${codec}: the run finishes and relays exactly the codec's bytes`,
      { timeout: 120_000 },
      async () => {
        const config = tinyConfig({ runId: `codec-${codec}`, steps: 2, compression: { codec, rank: 2 } });
        const coordinator = await startCoordinator(config, `${dir}/${codec}`);
        const nodes = [startNode(coordinator.url, 'cpu'), startNode(coordinator.url, 'cpu')];
        try {
          await coordinator.finished;
          const status = coordinator.status();
          const c = codec === 'subspace' ? coordinator.run.codec : resolveCodec(codec);
          const perMicroBatch = c.payloadBytes(boundary, 'forward') + c.payloadBytes(boundary, 'backward');
          expect(status.relayedBytes).toBe(config.steps * config.microBatchesPerStep * perMicroBatch);
          expect(Number.isFinite(status.loss)).toBe(true);
        } finally {
          await Promise.all(nodes.map((n) => n.stop()));
          await coordinator.close();
        }
      },
    );
  }
});

describe('the codec is checked on both ends of the network', () => {
  test(
    'a node refuses a run whose codec it does not know, says why, and takes no work',
    { timeout: 30_000 },
    async () => {
      const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });
      await new Promise((resolve) => server.once('listening', resolve));
      const port = (server.address() as { port: number }).port;
      const received: NodeMessage[] = [];
      const closed = new Promise<number>((resolve) => {
        server.on('connection', (ws) => {
          const reader = new WireReader(nodeMessageSchema, () => []);
          let id = 0;
          const send = (m: Parameters<typeof encodeMessage>[1]): void => {
            for (const part of encodeMessage(id++, m)) ws.send(part);
          };
          ws.on('message', (data: Buffer, binary) => {
            if (binary) return;
            const got = reader.readText(data.toString('utf8'))!.message;
            received.push(got);
            if (got.type === 'hello') {
              const keys = Ed25519Keys.generate();
              const key = keys.publicKeyHex;
              const proof = coordinatorProofBytes(got.nonce!, 'bm9uY2U=', key, got.nodeId);
              const signature = Buffer.from(keys.sign(proof)).toString('base64');
              send({ type: 'challenge', nonce: 'bm9uY2U=', coordinatorKey: key, runId: 'r', signature });
            }
            if (got.type === 'auth') {
              const welcome = {
                type: 'welcome',
                runId: 'r',
                model: { vocabSize: 256, contextLength: 16, width: 32, heads: 2, layers: 2, mlpRatio: 4 },
                shape: { batch: 2, seq: 16 },
                stages: 2,
                seed: 1,
                compression: {
                  codec: 'topk',
                  rank: 1,
                  constrainedBlocks: 'beforeLastStage',
                  positions: 'fixed',
                },
              } as const;
              expect(
                coordinatorMessageSchema.safeParse({ ...welcome, v: 1, id: 0, tensors: 0 }).success,
              ).toBe(true);
              send(welcome);
            }
          });
          ws.on('close', (code) => resolve(code));
        });
      });
      const node = startNode(`ws://127.0.0.1:${port}`, 'cpu');
      try {
        expect(await closed).toBe(4003);
        const error = received.find((m) => m.type === 'error');
        expect(error).toMatchObject({ code: 'unsupported-codec' });
        expect(error && 'message' in error ? error.message : '').toMatch(/unknown activation codec "topk"/);
        expect(received.some((m) => m.type === 'join')).toBe(false);
        expect(node.status.reason).toMatch(/refused run r: unknown activation codec "topk"/);
        expect(node.status.receipts).toBe(0);
      } finally {
        await node.stop();
        server.close();
      }
    },
  );

  test(
    'the coordinator refuses a result in another codec than the run uses, and credits nothing',
    { timeout: 60_000 },
    async () => {
      const config = tinyConfig({
        runId: 'codec-refuse',
        stages: 2,
        steps: 1,
        compression: { codec: 'int8' },
      });
      const coordinator = await startCoordinator(config, `${dir}/refuse`);
      const client = await RawClient.open(coordinator.url);
      let node: ReturnType<typeof startNode> | null = null;
      try {
        await client.authenticate();
        expect((await client.next('welcome')).compression).toMatchObject({ codec: 'int8' });
        client.send({ type: 'join' });
        const assign = await client.next('assign');
        expect(assign.range).toMatchObject({ index: 0 });
        client.send({ type: 'loaded', step: assign.step as number });
        node = startNode(coordinator.url, 'cpu');
        const task = await client.next('task');
        expect(task.kind).toBe('forward');
        const fp16 = resolveCodec('fp16').encode(new Float32Array(2 * 16 * 32), boundary, 'forward');
        client.send({ type: 'result', taskId: task.taskId as number, busyMs: 1 }, [
          { dtype: 'f32', shape: [2, 16, 32], codec: 'fp16', data: fp16 },
        ]);
        const error = await client.next('error');
        expect(error.message).toMatch(/uses the codec fp16; this run uses int8/);
        await until('the coordinator drops the raw client', () => coordinator.status().nodes === 1, 10_000);
        expect(coordinator.status().receipts).toBe(0);
      } finally {
        await node?.stop();
        client.close();
        await coordinator.close();
      }
    },
  );
});
