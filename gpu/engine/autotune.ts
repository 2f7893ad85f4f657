/**
 * Per-adapter matmul tuning: on first use of an adapter, time a small set of kernels on the model's own
 * products, keep the fastest for each of a linear layer's three products, and size dispatches from the
 * measured speed (the watchdog guard). Candidates are the tiled kernel's tiles and, in mixed precision where
 * the adapter offers a matching configuration, the subgroup-matrix (tensor-core) kernel; each must first
 * reproduce the plain tiled kernel's output, so a kernel a driver gets wrong is rejected with a message and
 * never used. The choice is cached as JSON through an injected store (the node keeps it in its data
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
import {
  type SubgroupMatrixTile,
  subgroupMatrixName,
  subgroupMatrixSupport,
} from '../kernels/matmul-subgroup-matrix.js';
import { checkTile, type TileShape } from '../kernels/matmul-wgsl.js';
import type { EncodedOp, TensorRef } from '../kernels/types.js';
import type { GptConfig, MicroBatchShape, Precision } from '../model/config.js';
import { mulberry32 } from '../model/params.js';

/** Bump when a kernel change makes old timings meaningless: cached entries of another version are stale. */
export const MATMUL_TUNING_VERSION = 2;

/**
 * How far a candidate's output may stray from the plain tiled kernel's (fp32), as a fraction of the largest
 * output: the mixed-precision tolerance. f16 operands put a correct kernel near 1e-4 of it on random
 * operands; a kernel that drops or misplaces a block is off by the order of the output itself.
 */
export const CANDIDATE_TOLERANCE = 1e-2;

/** What runs one product kind: a tile of the tiled kernel, or the subgroup-matrix kernel (mixed precision). */
export type KernelChoice = { tile: TileShape } | { subgroupMatrix: SubgroupMatrixTile };

/** The product kernels a candidate is checked on: a Matmul, or anything that records the same products. */
export type ProductKernels = Pick<Matmul, 'forward' | 'backwardInput' | 'backwardWeight'>;

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
  /** The operands the kernels were tuned for: 'mixed' runs f16 operands (and may pick tensor cores). */
  precision: Precision;
  /** The kernel per product kind ('lanes' adapters keep the lanes kernel where it fits). */
  kernels: Record<ProductKind, KernelChoice>;
  /** Measured GFLOP/s of the chosen kernel per kind, on the model's products. */
  gflops: Record<ProductKind, number>;
  /** The dispatch cap derived from the slowest measured speed. */
  maxDispatchFlops: number;
  /** 'tiled' on GPUs; 'lanes' on CPU adapters, where only the dispatch cap is measured. */
  family: 'tiled' | 'lanes';
}

/** One candidate on one product kind, as measured: its speed, or why it was rejected. */
export interface Trial {
  kind: ProductKind;
  kernel: string;
  gflops?: number;
  rejected?: string;
}

export interface TuneResult {
  tuning: MatmulTuning;
  source: 'cache' | 'measured';
  /** Seconds spent measuring (0 from the cache). */
  seconds: number;
  /** Every candidate tried (none from the cache). */
  trials: Trial[];
}

export interface TuneOptions {
  /** The products to time, per kind; see `modelProducts`. */
  products: Record<ProductKind, MatmulDims[]>;
  store?: TuningStore;
  log?: (line: string) => void;
  /** 'mixed' tunes the f16-operand kernels mixed precision runs (default 'fp32'). */
  precision?: Precision;
  /** Kernels to try on GPUs (default `matmulCandidates(device, precision)`). */
  candidates?: readonly KernelChoice[];
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

/** The kernels to try: the tiled kernel's tiles, and in mixed precision the adapter's subgroup-matrix tiles. */
export function matmulCandidates(device: GPUDevice, precision: Precision): KernelChoice[] {
  const tiles = MATMUL_TILES.map((tile) => ({ tile }));
  if (precision !== 'mixed') return tiles;
  return [...tiles, ...subgroupMatrixSupport(device).tiles.map((subgroupMatrix) => ({ subgroupMatrix }))];
}

export type TunedMatmulOptions = Pick<MatmulOptions, 'tiles' | 'subgroupMatrix' | 'maxDispatchFlops'>;

/** The options a KernelSet's Matmul takes from a tuning. */
export function matmulOptions(t: MatmulTuning): TunedMatmulOptions {
  const tiles: Partial<Record<ProductKind, TileShape>> = {};
  const subgroupMatrix: Partial<Record<ProductKind, SubgroupMatrixTile>> = {};
  for (const kind of PRODUCT_KINDS) {
    const choice = t.kernels[kind];
    if ('tile' in choice) tiles[kind] = choice.tile;
    else subgroupMatrix[kind] = choice.subgroupMatrix;
  }
  return { tiles, subgroupMatrix, maxDispatchFlops: t.maxDispatchFlops };
}

/** One line for logs and benchmarks: the adapter, each kind's kernel and speed, the dispatch cap. */
export function describeTuning(t: MatmulTuning): string {
  const kinds = PRODUCT_KINDS.map((k) => {
    const kernel = t.family === 'lanes' ? 'lanes' : kernelName(t.kernels[k]);
    return `${k} ${kernel} ${t.gflops[k].toFixed(1)} GFLOP/s`;
  });
  const precision = t.precision === 'mixed' ? ' (mixed precision)' : '';
  return `${t.adapter}${precision}: ${kinds.join(', ')}; dispatches up to ${(t.maxDispatchFlops / 1e9).toFixed(1)} GFLOP`;
}

/** The line a host logs once it has its kernels: the adapter, the kernels, and cache or fresh measurement. */
export function tuningLogLine(result: TuneResult): string {
  const source = result.source === 'cache' ? 'cache' : `measured in ${result.seconds.toFixed(1)} s`;
  return `matmul kernels (${source}): ${describeTuning(result.tuning)}`;
}

export function tileName(t: TileShape): string {
  return `${t.bm}x${t.bn}/${t.tm}x${t.tn}${t.double ? '/double' : ''}`;
}

export function kernelName(choice: KernelChoice): string {
  return 'tile' in choice ? tileName(choice.tile) : subgroupMatrixName(choice.subgroupMatrix);
}

/** The key of a tuning in the cache: the adapter, and the precision when it is not fp32. */
function cacheKey(adapter: string, precision: Precision): string {
  return precision === 'fp32' ? adapter : `${adapter} (${precision} precision)`;
}

export async function tuneMatmul(device: GPUDevice, options: TuneOptions): Promise<TuneResult> {
  const log = options.log ?? (() => {});
  const adapter = deviceName(device);
  const precision = options.precision ?? 'fp32';
  const candidates = options.candidates ?? matmulCandidates(device, precision);
  const key = cacheKey(adapter, precision);
  const file = options.store ? await readCache(options.store, log) : {};
  const cached = file[key];
  if (cached !== undefined) {
    const problem = entryProblem(cached, adapter, precision, candidates);
    if (problem === null) return { tuning: cached as MatmulTuning, source: 'cache', seconds: 0, trials: [] };
    log(`matmul tuning: ignoring the cached entry for ${key}: ${problem}; measuring again`);
  }
  if (precision === 'mixed') {
    const support = subgroupMatrixSupport(device);
    log(
      support.reason === null
        ? `matmul tuning: subgroup-matrix candidates: ${support.tiles.map(subgroupMatrixName).join('; ')}`
        : `matmul tuning: no subgroup-matrix candidate: ${support.reason}`,
    );
  }
  const started = performance.now();
  const { tuning, trials } = await measure(device, adapter, precision, candidates, options);
  const seconds = (performance.now() - started) / 1000;
  if (options.store) {
    try {
      await options.store.write(`${JSON.stringify({ ...file, [key]: tuning }, null, 2)}\n`);
    } catch (err) {
      log(`matmul tuning: could not save the tuning cache: ${(err as Error).message}`);
    }
  }
  return { tuning, source: 'measured', seconds, trials };
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
function entryProblem(
  entry: unknown,
  adapter: string,
  precision: Precision,
  candidates: readonly KernelChoice[],
): string | null {
  if (typeof entry !== 'object' || entry === null) return 'it is not an object';
  const e = entry as Partial<MatmulTuning>;
  if (e.version !== MATMUL_TUNING_VERSION)
    return `it is stale (tuning version ${String(e.version)}, the engine's is ${MATMUL_TUNING_VERSION})`;
  if (e.adapter !== adapter) return `it names another adapter (${String(e.adapter)})`;
  if (e.precision !== precision) return `it was tuned for ${String(e.precision)} precision, not ${precision}`;
  if (e.family !== 'tiled' && e.family !== 'lanes') return `unknown kernel family ${String(e.family)}`;
  if (!(typeof e.maxDispatchFlops === 'number' && e.maxDispatchFlops >= DEFAULT_DISPATCH_FLOPS))
    return `bad dispatch cap ${String(e.maxDispatchFlops)}`;
  // The lanes family records the default tile; a tiled one records one of the kernels offered now (the
  // subgroup-matrix ones only while the adapter still offers that configuration).
  const offered = [{ tile: MATMUL_TILE }, ...candidates].map((c) => JSON.stringify(c));
  for (const kind of PRODUCT_KINDS) {
    const choice = e.kernels?.[kind];
    const speed = e.gflops?.[kind];
    if (!(typeof speed === 'number' && speed > 0 && Number.isFinite(speed))) return `bad speed for ${kind}`;
    if (!choice || !offered.includes(JSON.stringify(choice)))
      return `${kind} names a kernel this engine does not offer here (${JSON.stringify(choice)})`;
    if ('tile' in choice) {
      try {
        checkTile(choice.tile);
      } catch (err) {
        return (err as Error).message;
      }
    }
  }
  return null;
}

async function measure(
  device: GPUDevice,
  adapter: string,
  precision: Precision,
  candidates: readonly KernelChoice[],
  options: TuneOptions,
): Promise<{ tuning: MatmulTuning; trials: Trial[] }> {
  const log = options.log ?? (() => {});
  const targetMs = options.targetMs ?? 40;
  const f16 = precision === 'mixed';
  const bench = new ProductBench(device, options.products);
  const trials: Trial[] = [];
  try {
    const probe = new Matmul(device, { lanes: options.lanes, f16 });
    const family = probe.lanes === null ? 'tiled' : 'lanes';
    // A first speed at the default guard, then the cap it allows, so candidates are not timed in slivers.
    const firstRate = await bench.flopsPerSecond(probe, 'forward', targetMs);
    const probeCap = watchdogDispatchFlops(firstRate);
    const kernels = {} as Record<ProductKind, KernelChoice>;
    const gflops = {} as Record<ProductKind, number>;
    // CPU adapters have one candidate, the lanes kernel (tests hold it to the tiled kernel's bits), so
    // there is nothing to check or choose; there only its speed, for the dispatch cap, is measured.
    const checker = family === 'tiled' ? new CandidateCheck(device, options.products) : null;
    try {
      for (const kind of PRODUCT_KINDS) {
        let best: { choice: KernelChoice; rate: number } | null = null;
        const tried = family === 'lanes' ? [{ tile: MATMUL_TILE }] : candidates;
        for (const choice of tried) {
          const matmul = new Matmul(device, {
            lanes: options.lanes,
            f16,
            maxDispatchFlops: probeCap,
            ...('tile' in choice
              ? { tile: choice.tile }
              : { subgroupMatrix: { [kind]: choice.subgroupMatrix } }),
          });
          const problem = checker ? await checker.problem(matmul, kind) : null;
          if (problem !== null) {
            log(`matmul tuning: rejected ${kernelName(choice)} for ${kind}: ${problem}`);
            trials.push({ kind, kernel: kernelName(choice), rejected: problem });
            continue;
          }
          const rate = await bench.flopsPerSecond(matmul, kind, targetMs);
          trials.push({
            kind,
            kernel: family === 'lanes' ? 'lanes' : kernelName(choice),
            gflops: rate / 1e9,
          });
          if (best === null || rate > best.rate) best = { choice, rate };
        }
        if (best === null) {
          // Every candidate disagreed with the plain tiled kernel: it runs, at the speed it has.
          log(`matmul tuning: no candidate for ${kind} matched the plain tiled kernel; keeping it`);
          const plain = new Matmul(device, { lanes: null, f16, maxDispatchFlops: probeCap });
          best = { choice: { tile: MATMUL_TILE }, rate: await bench.flopsPerSecond(plain, kind, targetMs) };
        }
        kernels[kind] = best.choice;
        gflops[kind] = best.rate / 1e9;
      }
    } finally {
      checker?.destroy();
    }
    const slowest = Math.min(...PRODUCT_KINDS.map((k) => gflops[k])) * 1e9;
    const tuning: MatmulTuning = {
      adapter,
      version: MATMUL_TUNING_VERSION,
      precision,
      kernels,
      gflops,
      maxDispatchFlops: watchdogDispatchFlops(slowest),
      family,
    };
    return { tuning, trials };
  } finally {
    bench.destroy();
  }
}

/**
 * Holds candidates to the plain tiled kernel in fp32 (`new Matmul(device, { lanes: null })`): each kind's
 * first product (rows capped at 512, which keeps every shape's divisibility) on seeded random operands in
 * [-1, 1), with C prefilled so that overwriting and accumulating both show. A candidate is rejected when any
 * output strays from the reference by more than CANDIDATE_TOLERANCE of the reference's largest magnitude.
 */
export class CandidateCheck {
  private readonly buffers: GPUBuffer[] = [];
  private readonly reference: Matmul;
  private readonly expected = new Map<ProductKind, Promise<Float32Array>>();
  private readonly inputs = new Map<
    ProductKind,
    { dims: MatmulDims; a: TensorRef; b: TensorRef; bias: TensorRef; prefill: Float32Array<ArrayBuffer> }
  >();

  constructor(
    private readonly device: GPUDevice,
    products: Record<ProductKind, MatmulDims[]>,
  ) {
    this.reference = new Matmul(device, { lanes: null });
    PRODUCT_KINDS.forEach((kind, i) => {
      const first = products[kind][0];
      if (!first) return;
      const dims = { ...first, rows: Math.min(first.rows, 512) };
      const random = mulberry32(0x5eed + i);
      const values = (n: number) => Float32Array.from({ length: n }, () => random() * 2 - 1);
      const { rows, inDim, outDim } = dims;
      // A is inp (forward) or dout; B the weight, or inp for the weight gradient.
      const a = this.tensor(values(rows * Math.max(inDim, outDim)));
      const b = this.tensor(values(Math.max(outDim, rows) * inDim));
      const bias = this.tensor(values(outDim));
      const prefill = values(Math.max(rows * outDim, Math.max(rows, outDim) * inDim));
      this.inputs.set(kind, { dims, a, b, bias, prefill });
    });
  }

  /** Why `candidate` fails on `kind`'s product, or null when it matches the reference. */
  async problem(candidate: ProductKernels, kind: ProductKind): Promise<string | null> {
    const input = this.inputs.get(kind);
    if (!input) return null;
    let expected = this.expected.get(kind);
    if (!expected) {
      expected = this.run(this.reference, kind);
      this.expected.set(kind, expected);
    }
    const want = await expected;
    let got: Float32Array;
    try {
      got = await this.run(candidate, kind);
    } catch (err) {
      return `it failed to run: ${(err as Error).message}`;
    }
    const scale = want.reduce((m, x) => Math.max(m, Math.abs(x)), 0);
    let worst = 0;
    let at = 0;
    for (let i = 0; i < want.length; i++) {
      const err = Math.abs(got[i]! - want[i]!);
      if (!(err <= worst)) {
        worst = Number.isNaN(err) ? Infinity : err;
        at = i;
      }
    }
    if (worst <= CANDIDATE_TOLERANCE * scale) return null;
    const { rows, inDim, outDim } = input.dims;
    return (
      `its output differs from the plain tiled kernel's by ${worst.toPrecision(3)} at element ${at} ` +
      `(${got[at]} against ${want[at]}; allowed ${(CANDIDATE_TOLERANCE * scale).toPrecision(3)}) on ` +
      `${rows}x${inDim}->${outDim}`
    );
  }

  /** The candidate's C for `kind`'s product, from the prefilled C, read back. */
  private async run(kernels: ProductKernels, kind: ProductKind): Promise<Float32Array> {
    const { dims, a, b, bias, prefill } = this.inputs.get(kind)!;
    const c = this.tensor(prefill);
    const staging = this.device.createBuffer({
      size: c.size,
      usage: GPUBufferUsage.MAP_READ | GPUBufferUsage.COPY_DST,
    });
    try {
      // A shader the driver refuses surfaces here, as the candidate's problem, not as an uncaptured error.
      this.device.pushErrorScope('internal');
      this.device.pushErrorScope('validation');
      let error: GPUError | null;
      try {
        const op: EncodedOp =
          kind === 'forward'
            ? kernels.forward({ out: c, inp: a, weight: b, bias, dims })
            : kind === 'backwardInput'
              ? kernels.backwardInput({ dinp: c, dout: a, weight: b, dims, overwrite: true })
              : kernels.backwardWeight({ dweight: c, dbias: null, dout: a, inp: b, dims });
        const encoder = this.device.createCommandEncoder();
        const pass = encoder.beginComputePass();
        op.encode(pass);
        pass.end();
        encoder.copyBufferToBuffer(c.buffer, 0, staging, 0, c.size);
        this.device.queue.submit([encoder.finish()]);
      } finally {
        // A shader Tint accepts may still fail in the backend's compiler: Dawn reports that as internal.
        const validation = await this.device.popErrorScope();
        const internal = await this.device.popErrorScope();
        error = validation ?? internal;
      }
      if (error) throw new Error(error.message);
      await staging.mapAsync(GPUMapMode.READ);
      const n =
        kind === 'forward'
          ? dims.rows * dims.outDim
          : kind === 'backwardInput'
            ? dims.rows * dims.inDim
            : dims.outDim * dims.inDim;
      return new Float32Array(staging.getMappedRange().slice(0, n * 4));
    } finally {
      staging.destroy();
      c.buffer.destroy();
      this.buffers.splice(this.buffers.indexOf(c.buffer), 1);
    }
  }

  private tensor(values: Float32Array<ArrayBuffer>): TensorRef {
    const size = Math.ceil((values.length * 4) / 256) * 256;
    const buffer = this.device.createBuffer({
      size,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST | GPUBufferUsage.COPY_SRC,
    });
    this.device.queue.writeBuffer(buffer, 0, values);
    this.buffers.push(buffer);
    return { buffer, offset: 0, size };
  }

  destroy(): void {
    for (const b of this.buffers) b.destroy();
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
