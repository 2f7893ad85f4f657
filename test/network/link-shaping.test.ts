import { createServer, connect, type AddressInfo, type Server, type Socket } from 'node:net';
import { afterEach, describe, expect, it } from 'vitest';
import { LinkSpecError, ShapedProxy, parseLink, type LinkShape } from '../../main/node/link-shaping.js';

/** A TCP server on 127.0.0.1 that echoes every byte back (the far end of the shaped link). */
async function echoServer(): Promise<Server> {
  const server = createServer((s) => s.pipe(s));
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

/** A sink that counts bytes and reports when `total` have arrived. */
async function sinkServer(total: number, onDone: (ms: number) => void): Promise<Server> {
  const server = createServer((s) => {
    let got = 0;
    let first = 0;
    s.on('data', (chunk: Buffer) => {
      if (got === 0) first = performance.now();
      got += chunk.length;
      if (got >= total) onDone(performance.now() - first);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return server;
}

function dial(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, noDelay: true }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Round trip of one byte through the link, in ms. */
async function roundTrip(socket: Socket): Promise<number> {
  const start = performance.now();
  const back = new Promise<void>((resolve) => socket.once('data', () => resolve()));
  socket.write(Buffer.from([1]));
  await back;
  return performance.now() - start;
}

const closers: Array<() => Promise<void> | void> = [];
afterEach(async () => {
  for (const close of closers.splice(0).reverse()) await close();
});

describe('parseLink', () => {
  it('reads rate and one-way delay in tc units', () => {
    expect(parseLink('80mbit,40ms')).toEqual({ bitsPerSecond: 80e6, latencyMs: 40 });
    expect(parseLink('1gbit')).toEqual({ bitsPerSecond: 1e9, latencyMs: 0 });
    expect(parseLink('250us')).toEqual({ bitsPerSecond: null, latencyMs: 0.25 });
    expect(parseLink('none')).toEqual({ bitsPerSecond: null, latencyMs: 0 });
  });

  it('refuses what it cannot read, naming the expected form', () => {
    for (const bad of ['80', 'fast', '80mbit,40', '0mbit', '80mbit,80mbit', '40ms,-1ms', '80 mbps', '2min'])
      expect(() => parseLink(bad), bad).toThrow(LinkSpecError);
    expect(() => parseLink('80mbps')).toThrow(/expected RATE,DELAY such as 80mbit,40ms/);
  });
});

describe('ShapedProxy', () => {
  async function proxyTo(server: Server, shape: LinkShape): Promise<ShapedProxy> {
    closers.push(() => new Promise<void>((resolve) => server.close(() => resolve())));
    const proxy = await ShapedProxy.start({ port: (server.address() as AddressInfo).port }, shape);
    closers.push(() => proxy.close());
    return proxy;
  }

  it('adds the one-way delay in each direction', async () => {
    const proxy = await proxyTo(await echoServer(), { bitsPerSecond: null, latencyMs: 30 });
    const socket = await dial(proxy.port);
    closers.push(() => void socket.destroy());
    await roundTrip(socket);
    const samples = [];
    for (let i = 0; i < 5; i++) samples.push(await roundTrip(socket));
    const median = samples.sort((a, b) => a - b)[2]!;
    // Two one-way delays; the two shared cores add scheduling noise on top, never take time away (how much
    // depends on the machine's load, so the upper bound only catches a delay added twice).
    expect(median).toBeGreaterThanOrEqual(59);
    expect(median).toBeLessThan(2 * 60);
  });

  it('limits throughput to the rate, per connection', async () => {
    const total = 1_500_000;
    let elapsed = 0;
    const done = new Promise<void>((resolve) => {
      void sinkServer(total, (ms) => {
        elapsed = ms;
        resolve();
      }).then(async (server) => {
        const proxy = await proxyTo(server, { bitsPerSecond: 40e6, latencyMs: 5 });
        const socket = await dial(proxy.port);
        closers.push(() => void socket.destroy());
        socket.write(Buffer.alloc(total, 7));
      });
    });
    await done;
    const mbit = (total * 8) / (elapsed / 1000) / 1e6;
    // 1.5 MB at 40 Mbit/s: 300 ms of serialisation; the first chunk arrives after its own serialisation.
    // Never faster than the rate; slower only by what a loaded machine's late timers cost (the lower bound
    // catches a rate applied twice, not noise).
    expect(mbit).toBeLessThan(40 * 1.1);
    expect(mbit).toBeGreaterThan(40 * 0.55);
  });

  it('passes a sender that finished first its last bytes before closing', async () => {
    const server = await echoServer();
    const proxy = await proxyTo(server, { bitsPerSecond: 8e6, latencyMs: 20 });
    const socket = await dial(proxy.port);
    const chunks: Buffer[] = [];
    socket.on('data', (c: Buffer) => chunks.push(c));
    const closed = new Promise<void>((resolve) => socket.on('end', () => resolve()));
    socket.end(Buffer.alloc(200_000, 3));
    await closed;
    expect(Buffer.concat(chunks).length).toBe(200_000);
    expect(proxy.bytes).toBe(400_000);
  });
});
