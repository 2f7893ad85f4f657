import { createConnection, createServer, type AddressInfo, type Server, type Socket } from 'node:net';

/**
 * A home-grade link on one machine: every connection through a `ShapedProxy` gets its own pair of directions,
 * each limited to `bitsPerSecond` and delayed by `latencyMs` (one way, so a round trip costs twice that),
 * like `tc netem` on both ends of a real link. Null means "no limit" / "no delay".
 */
export interface LinkShape {
  bitsPerSecond: number | null;
  latencyMs: number;
}

export const unshaped: LinkShape = { bitsPerSecond: null, latencyMs: 0 };

const RATE_UNITS: Record<string, number> = { bit: 1, kbit: 1e3, mbit: 1e6, gbit: 1e9 };
const TIME_UNITS: Record<string, number> = { us: 1e-3, ms: 1, s: 1e3 };

export class LinkSpecError extends Error {}

/**
 * Parses `RATE,DELAY` as `tributary local --link` takes it: `80mbit,40ms`, `1gbit,0ms`, `80mbit` or `40ms`
 * alone, or `none`. Rates are decimal (tc's units: 1mbit = 10^6 bit/s).
 */
export function parseLink(text: string): LinkShape {
  const spec = text.trim().toLowerCase();
  if (spec === 'none' || spec === '') return unshaped;
  let bitsPerSecond: number | null = null;
  let latencyMs: number | null = null;
  for (const part of spec.split(',')) {
    const m = /^(\d+(?:\.\d+)?)\s*([a-z]+)$/.exec(part.trim());
    const value = m ? Number(m[1]) : NaN;
    const unit = m?.[2] ?? '';
    if (unit in RATE_UNITS && bitsPerSecond === null && value > 0) bitsPerSecond = value * RATE_UNITS[unit]!;
    else if (unit in TIME_UNITS && latencyMs === null && value >= 0 && value * TIME_UNITS[unit]! <= 60_000)
      latencyMs = value * TIME_UNITS[unit]!;
    else
      throw new LinkSpecError(
        `link "${text}": expected RATE,DELAY such as 80mbit,40ms (rate in bit/kbit/mbit/gbit above 0, one-way delay in us/ms/s up to 60 s), or none`,
      );
  }
  return { bitsPerSecond, latencyMs: latencyMs ?? 0 };
}

export function describeLink(shape: LinkShape): string {
  if (shape.bitsPerSecond === null && shape.latencyMs === 0) return 'unshaped';
  const rate = shape.bitsPerSecond === null ? 'unlimited' : `${shape.bitsPerSecond / 1e6} Mbit/s`;
  return `${rate}, ${shape.latencyMs} ms one way`;
}

/**
 * One direction of one connection: a chunk leaves when the link has finished sending everything before it
 * (serialisation at the rate) and arrives `latencyMs` later. Reading pauses while more than `highWater`
 * bytes are queued or the receiver's socket is full, so a fast sender feels the link's back-pressure.
 */
class ShapedDirection {
  private readonly queue: Array<{ at: number; chunk: Buffer }> = [];
  private queued = 0;
  private linkFreeAt = 0;
  private timer: NodeJS.Timeout | null = null;
  private ended = false;
  bytes = 0;

  constructor(
    private readonly from: Socket,
    private readonly to: Socket,
    private readonly shape: LinkShape,
    private readonly highWater: number,
  ) {
    from.on('data', (chunk: Buffer) => this.push(chunk));
    from.on('end', () => {
      this.ended = true;
      this.pump();
    });
    to.on('drain', () => this.maybeResume());
  }

  private push(chunk: Buffer): void {
    const now = performance.now();
    const start = Math.max(now, this.linkFreeAt);
    this.linkFreeAt =
      this.shape.bitsPerSecond === null
        ? start
        : start + (chunk.length * 8 * 1000) / this.shape.bitsPerSecond;
    this.queue.push({ at: this.linkFreeAt + this.shape.latencyMs, chunk });
    this.queued += chunk.length;
    if (this.queued > this.highWater) this.from.pause();
    this.pump();
  }

  private pump(): void {
    if (this.timer) return;
    const now = performance.now();
    while (this.queue.length > 0 && this.queue[0]!.at <= now + 0.5) {
      const { chunk } = this.queue.shift()!;
      this.queued -= chunk.length;
      this.bytes += chunk.length;
      if (!this.to.destroyed) this.to.write(chunk);
    }
    if (this.queue.length > 0) {
      this.timer = setTimeout(
        () => {
          this.timer = null;
          this.pump();
        },
        Math.max(1, this.queue[0]!.at - now),
      );
    } else if (this.ended && !this.to.destroyed) {
      this.to.end();
    }
    this.maybeResume();
  }

  private maybeResume(): void {
    if (this.queued <= this.highWater / 2 && !this.to.writableNeedDrain && this.from.isPaused())
      this.from.resume();
  }

  stop(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    this.queue.length = 0;
  }
}

/**
 * A TCP proxy on 127.0.0.1 in front of `target`: whatever runs over TCP (the coordinator's WebSocket, a
 * libp2p listener) is dialled at `port` instead and each accepted connection gets its own shaped link.
 */
export class ShapedProxy {
  private readonly sockets = new Set<Socket>();
  private readonly directions = new Set<ShapedDirection>();
  /** Bytes delivered through the proxy, both directions, all connections. */
  private closedBytes = 0;

  private constructor(
    private readonly server: Server,
    readonly shape: LinkShape,
  ) {}

  static async start(target: { host?: string; port: number }, shape: LinkShape): Promise<ShapedProxy> {
    // Half-open sockets let each direction deliver what it still holds before passing the sender's FIN on.
    const server = createServer({ noDelay: true, allowHalfOpen: true });
    const proxy = new ShapedProxy(server, shape);
    server.on('connection', (inbound) => proxy.accept(inbound, target));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve());
    });
    return proxy;
  }

  get port(): number {
    return (this.server.address() as AddressInfo).port;
  }

  get bytes(): number {
    let sum = this.closedBytes;
    for (const d of this.directions) sum += d.bytes;
    return sum;
  }

  private accept(inbound: Socket, target: { host?: string; port: number }): void {
    const outbound = createConnection({
      host: target.host ?? '127.0.0.1',
      port: target.port,
      noDelay: true,
      allowHalfOpen: true,
    });
    // Two bandwidth-delay products (at least 256 KiB, so timer and event-loop gaps do not idle the link)
    // keep the link busy without buffering much more than a real path would.
    const bdp =
      this.shape.bitsPerSecond === null ? 0 : (this.shape.bitsPerSecond / 8) * (this.shape.latencyMs / 1000);
    const highWater = Math.max(256 * 1024, 2 * bdp);
    const up = new ShapedDirection(inbound, outbound, this.shape, highWater);
    const down = new ShapedDirection(outbound, inbound, this.shape, highWater);
    for (const s of [inbound, outbound]) this.sockets.add(s);
    this.directions.add(up).add(down);
    const teardown = (): void => {
      for (const s of [inbound, outbound]) s.destroy();
      if (!inbound.closed || !outbound.closed) return;
      for (const d of [up, down]) {
        if (!this.directions.delete(d)) continue;
        this.closedBytes += d.bytes;
        d.stop();
      }
      for (const s of [inbound, outbound]) this.sockets.delete(s);
    };
    for (const s of [inbound, outbound]) {
      s.on('error', teardown);
      // Both halves done on one side: the peer's FIN has been passed on and nothing is left to deliver there.
      s.on('close', () => (inbound.closed && outbound.closed ? teardown() : undefined));
    }
  }

  async close(): Promise<void> {
    for (const s of this.sockets) s.destroy();
    await new Promise<void>((resolve) => this.server.close(() => resolve()));
  }
}
