/**
 * Per-adapter matmul tuning: on first use of an adapter, time a small set of tiles on the model's own products,
 * keep the fastest for each of a linear layer's three products, and size dispatches from the measured speed
 * (the watchdog guard). The choice is cached as JSON through an injected store (the node keeps it in its data
 * directory) and reused while the adapter, its driver and the engine's kernels stay the same; an entry that
 * does not parse or does not fit is ignored with a message and measured again.
 */
import { deviceName } from '../device/acquire.js';
import {
  DEFAULT_DISPATCH_FLOPS,
  MATMUL_TILE,
  MATMUL_TILES,
  Matmul,
  PRODUCT_KINDS,
  type MatmulDims,
  type MatmulOptions,
  type ProductKind,
  watchdogDispatchFlops,
} from '../kernels/matmul.js';
import { checkTile, type TileShape } from '../kernels/matmul-wgsl.js';
import type { EncodedOp, TensorRef } from '../kernels/types.js';
import type { GptConfig, MicroBatchShape } from '../model/config.js';

/** Bump when a kernel change makes old timings meaningless: cached entries of another version are stale. */
export const MATMUL_TUNING_VERSION = 1;

/** Where the tuning cache lives; the host supplies it (a file in the node's data directory). */
export interface TuningStore {
  /** The stored text, or null when there is none yet. */
  read(): Promise<string | null>;
  write(text: string): Promise<void>;
}

export interface MatmulTuning {
  /** The adapter: vendor, architecture, device and driver description. */
  adapter: string;
  version: number;
  /** The tiled kernel's tile per product kind ('lanes' adapters keep the lanes kernel where it fits). */
  tiles: Record<ProductKind, TileShape>;
  /** Measured GFLOP/s of the chosen kernel per kind, on the model's products. */
  gflops: Record<ProductKind, number>;
  /** The dispatch cap derived from the slowest measured speed. */
  maxDispatchFlops: number;
  /** 'tiled' on GPUs; 'lanes' on CPU adapters, where only the dispatch cap is measured. */
  family: 'tiled' | 'lanes';
}

export interface TuneResult {
  tuning: MatmulTuning;
  source: 'cache' | 'measured';
  /** Seconds spent measuring (0 from the cache). */
  seconds: number;
}

export interface TuneOptions {
  /** The products to time, per kind; see `modelProducts`. */
  products: Record<ProductKind, MatmulDims[]>;
  store?: TuningStore;
  log?: (line: string) => void;
  /** Tiles to try on GPUs (default MATMUL_TILES). */
  candidates?: readonly TileShape[];
  /** Target GPU time of one candidate's timed run, in ms. */
  targetMs?: number;
  /** Subgroup size of the lanes kernel, as for `Matmul` (default: the device's, on CPU adapters). */
  lanes?: number | null;
}

/** The products the model runs, per kind: the MLP's first layer and the attention projection (most FLOPs). */
export function modelProducts(config: GptConfig, shape: MicroBatchShape): Record<ProductKind, MatmulDims[]> {
  const rows = shape.batch * shape.seq;
  const C = config.width;
  const layers: MatmulDims[] = [
    { rows, inDim: C, outDim: config.mlpRatio * C },
    { rows, inDim: config.mlpRatio * C, outDim: C },
    { rows, inDim: C, outDim: C },
  ];
  return { forward: layers, backwardInput: layers, backwardWeight: layers };
}

/** The options a KernelSet's Matmul takes from a tuning. */
export function matmulOptions(t: MatmulTuning): Pick<MatmulOptions, 'tiles' | 'maxDispatchFlops'> {
  return { tiles: t.tiles, maxDispatchFlops: t.maxDispatchFlops };
}

/** One line for logs and benchmarks: the adapter, each kind's tile and speed, the dispatch cap. */
export function describeTuning(t: MatmulTuning): string {
  const kinds = PRODUCT_KINDS.map((k) => {
    const kernel = t.family === 'lanes' ? 'lanes' : tileName(t.tiles[k]);
    return `${k} ${kernel} ${t.gflops[k].toFixed(1)} GFLOP/s`;
  });
  return `${kinds.join(', ')}; dispatches up to ${(t.maxDispatchFlops / 1e9).toFixed(1)} GFLOP`;
}

export function tileName(t: TileShape): string {
  return `${t.bm}x${t.bn}/${t.tm}x${t.tn}${t.double ? '/double' : ''}`;
}

export async function tuneMatmul(device: GPUDevice, options: TuneOptions): Promise<TuneResult> {
  const log = options.log ?? (() => {});
  const adapter = deviceName(device);
  const candidates = options.candidates ?? MATMUL_TILES;
  const file = options.store ? await readCache(options.store, log) : {};
  const cached = file[adapter];
  if (cached !== undefined) {
    const problem = entryProblem(cached, adapter, candidates);
    if (problem === null) return { tuning: cached as MatmulTuning, source: 'cache', seconds: 0 };
    log(`matmul tuning: ignoring the cached entry for ${adapter}: ${problem}; measuring again`);
  }
  const started = performance.now();
  const tuning = await measure(device, adapter, candidates, options);
  const seconds = (performance.now() - started) / 1000;
  if (options.store) {
    try {
      await options.store.write(`${JSON.stringify({ ...file, [adapter]: tuning }, null, 2)}\n`);
    } catch (err) {
      log(`matmul tuning: could not save the tuning cache: ${(err as Error).message}`);
    }
  }
  return { tuning, source: 'measured', seconds };
}

/** The cache's entries by adapter; anything unreadable counts as empty, with a message. */
async function readCache(store: TuningStore, log: (line: string) => void): Promise<Record<string, unknown>> {
  let text: string | null;
  try {
    text = await store.read();
  } catch (err) {
    log(`matmul tuning: ignoring the tuning cache, it cannot be read: ${(err as Error).message}`);
    return {};
  }
  if (text === null) return {};
  try {
    const parsed: unknown = JSON.parse(text);
    if (typeof parsed === 'object' && parsed !== null && !Array.isArray(parsed))
      return parsed as Record<string, unknown>;
    log('matmul tuning: ignoring the tuning cache, it is not a JSON object');
  } catch (err) {
    log(`matmul tuning: ignoring the tuning cache, it is not valid JSON (${(err as Error).message})`);
  }
  return {};
}

/** Why a cached entry cannot be trusted, or null when it can. */
function entryProblem(entry: unknown, adapter: string, candidates: readonly TileShape[]): string | null {
  if (typeof entry !== 'object' || entry === null) return 'it is not an object';
  const e = entry as Partial<MatmulTuning>;
  if (e.version !== MATMUL_TUNING_VERSION)
    return `it is stale (tuning version ${String(e.version)}, the engine's is ${MATMUL_TUNING_VERSION})`;
  if (e.adapter !== adapter) return `it names another adapter (${String(e.adapter)})`;
  if (e.family !== 'tiled' && e.family !== 'lanes') return `unknown kernel family ${String(e.family)}`;
  if (!(typeof e.maxDispatchFlops === 'number' && e.maxDispatchFlops >= DEFAULT_DISPATCH_FLOPS))
    return `bad dispatch cap ${String(e.maxDispatchFlops)}`;
  for (const kind of PRODUCT_KINDS) {
    const tile = e.tiles?.[kind];
    const speed = e.gflops?.[kind];
    if (!(typeof speed === 'number' && speed > 0 && Number.isFinite(speed))) return `bad speed for ${kind}`;
    const known = [MATMUL_TILE, ...candidates].some((c) => JSON.stringify(c) === JSON.stringify(tile));
    if (!tile || !known) return `${kind} names a tile this engine does not offer (${JSON.stringify(tile)})`;
    try {
      checkTile(tile);
    } catch (err) {
      return (err as Error).message;
    }
  }
  return null;
}

async function measure(
  device: GPUDevice,
  adapter: string,
  candidates: readonly TileShape[],
  options: TuneOptions,
): Promise<MatmulTuning> {
  const log = options.log ?? (() => {});
  const targetMs = options.targetMs ?? 40;
  const bench = new ProductBench(device, options.products);
  try {
    const probe = new Matmul(device, { lanes: options.lanes });
    const family = probe.lanes === null ? 'tiled' : 'lanes';
    // A first speed at the default guard, then the cap it allows, so candidates are not timed in slivers.
    const firstRate = await bench.flopsPerSecond(probe, 'forward', targetMs);
    const probeCap = watchdogDispatchFlops(firstRate);
    const tiles = {} as Record<ProductKind, TileShape>;
    const gflops = {} as Record<ProductKind, number>;
    for (const kind of PRODUCT_KINDS) {
      let best: { tile: TileShape; rate: number } | null = null;
      const tried = family === 'lanes' ? [MATMUL_TILE] : candidates;
      for (const tile of tried) {
        const matmul = new Matmul(device, { lanes: options.lanes, tile, maxDispatchFlops: probeCap });
        const rate = await bench.flopsPerSecond(matmul, kind, targetMs);
        if (best === null || rate > best.rate) best = { tile, rate };
      }
      tiles[kind] = best!.tile;
      gflops[kind] = best!.rate / 1e9;
    }
    const slowest = Math.min(...PRODUCT_KINDS.map((k) => gflops[k])) * 1e9;
    const tuning: MatmulTuning = {
      adapter,
      version: MATMUL_TUNING_VERSION,
      tiles,
      gflops,
      maxDispatchFlops: watchdogDispatchFlops(slowest),
      family,
    };
    log(`matmul tuning: measured on ${adapter}: ${describeTuning(tuning)}`);
    return tuning;
  } finally {
    bench.destroy();
  }
}

/** Buffers for the model's products, and timed runs of one Matmul over them. */
class ProductBench {
  private readonly buffers: GPUBuffer[] = [];
  private readonly refs: Record<'a' | 'b' | 'c' | 'bias', TensorRef>;

  constructor(
    private readonly device: GPUDevice,
    private readonly products: Record<ProductKind, MatmulDims[]>,
  ) {
    const all = PRODUCT_KINDS.flatMap((k) => products[k]);
    const most = (f: (d: MatmulDims) => number) => Math.max(4, ...all.map(f));
    const tensor = (floats: number, fill: number): TensorRef => {
      const size = Math.ceil((floats * 4) / 256) * 256;
      const buffer = device.createBuffer({ size, usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST });
      device.queue.writeBuffer(buffer, 0, new Float32Array(size / 4).fill(fill));
      this.buffers.push(buffer);
      return { buffer, offset: 0, size };
    };
    this.refs = {
      // A: inp or dout; B: the weight, or inp for the weight gradient; C: out, dinp or dweight.
      a: tensor(
        most((d) => d.rows * Math.max(d.inDim, d.outDim)),
        0.01,
      ),
      b: tensor(
        most((d) => Math.max(d.outDim, d.rows) * d.inDim),
        0.02,
      ),
      c: tensor(
        most((d) => Math.max(d.rows * d.outDim, Math.max(d.rows, d.outDim) * d.inDim)),
        0,
      ),
      bias: tensor(
        most((d) => d.outDim),
        0.5,
      ),
    };
  }

  /** Speed of `matmul` over this kind's products: one warm-up (compiles), then a run of ~targetMs. */
  async flopsPerSecond(matmul: Matmul, kind: ProductKind, targetMs: number): Promise<number> {
    const ops = this.products[kind].map((dims) => this.op(matmul, kind, dims));
    const flops = this.products[kind].reduce((n, d) => n + 2 * d.rows * d.inDim * d.outDim, 0);
    await this.time(ops, 1);
    const once = await this.time(ops, 1);
    const reps = Math.max(1, Math.min(1000, Math.ceil(targetMs / Math.max(once, 0.01))));
    const ms = await this.time(ops, reps);
    return (flops * reps) / (ms / 1000);
  }

  private op(matmul: Matmul, kind: ProductKind, dims: MatmulDims): EncodedOp {
    const { a, b, c, bias } = this.refs;
    if (kind === 'forward') return matmul.forward({ out: c, inp: a, weight: b, bias, dims });
    if (kind === 'backwardInput')
      return matmul.backwardInput({ dinp: c, dout: a, weight: b, dims, overwrite: true });
    return matmul.backwardWeight({ dweight: c, dbias: null, dout: a, inp: b, dims });
  }

  /** Wall ms for `reps` rounds of `ops` in one submission, waited on through a mapped buffer. */
  private async time(ops: EncodedOp[], reps: number): Promise<number> {
    const encoder = this.device.createCommandEncoder();
    const pass = encoder.beginComputePass();
    for (let r = 0; r < reps; r++) for (const op of ops) op.encode(pass);
    pass.end();
    const fence = this.device.createBuffer({
      size: 4,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    encoder.clearBuffer(fence);
    const started = performance.now();
    this.device.queue.submit([encoder.finish()]);
    await fence.mapAsync(GPUMapMode.READ);
    const ms = performance.now() - started;
    fence.destroy();
    return ms;
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
  }
}
