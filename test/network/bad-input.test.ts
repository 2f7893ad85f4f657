import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, test } from 'vitest';
import type { Coordinator } from '../../coordinator/coordinator.js';
import { decodeFrame, encodeFrame, FrameError } from '../../shared/protocol/frame.js';
import { nodeMessageSchema, type NodeMessage } from '../../shared/protocol/messages.js';
import { ProtocolError, WireReader } from '../../shared/protocol/wire.js';
import { startCoordinator, startNode, tempDir, tinyConfig } from './helpers.js';
import { RawClient } from './raw-client.js';

const MAX_FRAME = 1 << 20;
const { dir, cleanup } = tempDir();
let coordinator: Coordinator;

beforeAll(async () => {
  coordinator = await startCoordinator(tinyConfig({ steps: 3 }), dir, {
    limits: { maxBytes: MAX_FRAME, maxTextBytes: 64 * 1024 },
    authTimeoutMs: 2000,
  });
});
afterAll(async () => {
  await coordinator.close();
  cleanup();
});

/** The coordinator still answers: a new node authenticates and gets a pong, and /status responds. */
async function stillServing(): Promise<void> {
  const client = await RawClient.open(coordinator.url);
  await client.authenticate();
  await client.next('welcome');
  client.send({ type: 'ping', sentAt: 42 });
  expect((await client.next('pong')).sentAt).toBe(42);
  client.close();
  const http = coordinator.url.replace('ws', 'http');
  const status = (await (await fetch(`${http}/status`)).json()) as { runId: string };
  expect(status.runId).toBe('test-run');
  expect(await (await fetch(`${http}/metrics`)).text()).toMatch(
    /tributary_rejected_messages_total\{code="[a-z-]+"\} [1-9]/,
  );
}

async function refused(client: RawClient, code?: string): Promise<void> {
  const error = await client.next('error');
  if (code) expect(error.code).toBe(code);
  expect(await client.closed).toBe(1008);
}

describe('the wire format refuses malformed input with a ProtocolError, never anything else', () => {
  const reader = (): WireReader<NodeMessage> => new WireReader<NodeMessage>(nodeMessageSchema, () => []);

  test('arbitrary text', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.string(),
          fc.json(),
          fc.jsonValue().map((v) => JSON.stringify({ v: 1, id: 1, tensors: 0, type: 'hello', x: v })),
        ),
        (text) => {
          try {
            reader().readText(text);
          } catch (err) {
            expect(err).toBeInstanceOf(ProtocolError);
          }
        },
      ),
      { numRuns: 500 },
    );
  });

  test('arbitrary bytes as a tensor frame', () => {
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 256 }), (bytes) => {
        expect(() => decodeFrame(bytes)).toThrow(FrameError);
      }),
      { numRuns: 500 },
    );
  });

  test('frames round-trip, and a frame whose shape disagrees with its payload or the expectation is refused', () => {
    fc.assert(
      fc.property(
        fc.array(fc.integer({ min: 1, max: 5 }), { minLength: 1, maxLength: 4 }),
        fc.integer({ min: 0, max: 3 }),
        (shape, extra) => {
          const n = shape.reduce((a, b) => a * b, 1);
          const data = Float32Array.from({ length: n }, (_, i) => i * 0.5);
          const frame = encodeFrame(9, 0, { dtype: 'f32', shape, data });
          const back = decodeFrame(frame);
          expect(back.shape).toEqual(shape);
          expect([...back.tensor.data]).toEqual([...data]);
          const padded = new Uint8Array(frame.length + 4 * (extra + 1));
          padded.set(frame);
          expect(() => decodeFrame(padded)).toThrow(FrameError);
          const wrong = new WireReader<NodeMessage>(nodeMessageSchema, () => [
            { dtype: 'f32', shape: [n + 1] },
          ]);
          wrong.readText(JSON.stringify({ v: 1, id: 9, tensors: 1, type: 'grads', step: 0, attempt: 0 }));
          expect(() => wrong.readBinary(frame)).toThrow(/expected f32/);
        },
      ),
      { numRuns: 200 },
    );
  });
});

describe('the coordinator refuses bad peers and keeps serving', () => {
  test('random text and JSON before authentication', { timeout: 60_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.oneof(fc.string({ maxLength: 200 }), fc.json({ maxDepth: 3 })), async (text) => {
        const client = await RawClient.open(coordinator.url);
        client.ws.send(text);
        await refused(client);
      }),
      { numRuns: 40 },
    );
    await stillServing();
  });

  test('random binary frames before authentication', { timeout: 60_000 }, async () => {
    await fc.assert(
      fc.asyncProperty(fc.uint8Array({ minLength: 1, maxLength: 512 }), async (bytes) => {
        const client = await RawClient.open(coordinator.url);
        client.ws.send(bytes);
        await refused(client, 'unexpected');
      }),
      { numRuns: 40 },
    );
    await stillServing();
  });

  test('oversized text and oversized frames', async () => {
    const text = await RawClient.open(coordinator.url);
    text.ws.send(
      JSON.stringify({ v: 1, id: 1, tensors: 0, type: 'ping', sentAt: 1, pad: 'x'.repeat(100_000) }),
    );
    await refused(text, 'too-large');
    const binary = await RawClient.open(coordinator.url);
    binary.ws.send(new Uint8Array(MAX_FRAME + 1));
    expect(await binary.closed).toBe(1009);
    await stillServing();
  });

  test('a connection that never authenticates is closed', async () => {
    const silent = await RawClient.open(coordinator.url);
    await refused(silent, 'unauthenticated');
    await stillServing();
  });

  test('messages before authentication, forged signatures, unrequested tensors', async () => {
    const early = await RawClient.open(coordinator.url);
    early.send({ type: 'join' });
    await refused(early, 'unauthenticated');

    const forged = await RawClient.open(coordinator.url);
    await forged.authenticate((data) => {
      const sig = forged.keys.sign(data);
      sig[0]! ^= 1;
      return sig;
    });
    await refused(forged, 'unauthenticated');

    const impostor = await RawClient.open(coordinator.url);
    const victim = await RawClient.open(coordinator.url);
    // Claiming another node's id fails: the impostor cannot sign for that key.
    impostor.send({
      type: 'hello',
      nodeId: victim.keys.publicKeyHex,
      client: 'raw',
      engine: 'cpu',
      receiptCursor: 0,
    });
    await impostor.next('challenge');
    impostor.send({
      type: 'auth',
      signature: Buffer.from(impostor.keys.sign(new Uint8Array(8))).toString('base64'),
    });
    await refused(impostor, 'unauthenticated');
    victim.close();

    const greedy = await RawClient.open(coordinator.url);
    await greedy.authenticate();
    await greedy.next('welcome');
    greedy.send({ type: 'grads', step: 0, attempt: 99 }, [
      { dtype: 'f32', shape: [4], data: new Float32Array(4) },
    ]);
    await refused(greedy, 'unexpected');
    await stillServing();
  });

  test('authenticated peers sending random well-enveloped messages', { timeout: 60_000 }, async () => {
    const types = ['hello', 'auth', 'result', 'grads', 'applied', 'loaded', 'state', 'ping', 'nonsense'];
    await fc.assert(
      fc.asyncProperty(
        fc.constantFrom(...types),
        fc.dictionary(fc.string({ maxLength: 8 }), fc.jsonValue({ maxDepth: 2 }), { maxKeys: 4 }),
        async (type, fields) => {
          const client = await RawClient.open(coordinator.url);
          await client.authenticate();
          await client.next('welcome');
          client.ws.send(JSON.stringify({ ...fields, v: 1, id: 5, tensors: 0, type }));
          client.send({ type: 'ping', sentAt: 1 });
          // Either it was valid (and the ping is answered) or it was refused with an error and a close.
          const outcome = await Promise.race([
            client.next('pong', 5000).then(() => 'served'),
            client.closed.then(() => 'closed'),
          ]);
          if (outcome === 'closed') expect(client.messages.some((m) => m.type === 'error')).toBe(true);
          client.close();
        },
      ),
      { numRuns: 40 },
    );
    await stillServing();
  });

  test(
    'a stage result of the wrong shape is refused and the run carries on without that node',
    { timeout: 90_000 },
    async () => {
      const fake = await RawClient.open(coordinator.url);
      await fake.authenticate();
      await fake.next('welcome');
      fake.send({ type: 'join' });
      const assign = await fake.next('assign');
      expect((assign.range as { index: number }).index).toBe(0);
      fake.send({ type: 'loaded', step: assign.step as number });
      const real = startNode(coordinator.url, 'cpu');
      const task = await fake.next('task');
      fake.send({ type: 'result', taskId: task.taskId as number, busyMs: 1 }, [
        { dtype: 'f32', shape: [1, 2, 3], data: new Float32Array(6) },
      ]);
      await refused(fake, 'bad-shape');
      // An honest node takes the free stage and the run completes.
      const honest = startNode(coordinator.url, 'cpu');
      await coordinator.finished;
      expect(coordinator.status().step).toBe(3);
      await stillServing();
      await Promise.all([real.stop(), honest.stop()]);
    },
  );
});
