import type { EncodedOp, TensorRef } from './types.js';
import { cpuSubgroupLanes } from './lanes.js';
import { PipelineCache, vec4Width } from './op.js';
import {
  type ALayout,
  type BLayout,
  type Epilogue,
  type MatmulVariant,
  type TileShape,
  columnSumShader,
  matmulShader,
} from './matmul-wgsl.js';
import {
  SUBGROUP_MATRIX_FEATURE,
  type SubgroupMatrixTile,
  type SubgroupMatrixVariant,
  subgroupMatrixShader,
  subgroupMatrixSpan,
} from './matmul-subgroup-matrix.js';
import {
  type LanesVariant,
  lanesMatmulShader,
  lanesProductFits,
  lanesTileWidth,
} from './matmul-lanes-wgsl.js';

/** Shapes of a linear layer in llm.c's layout: weight (outDim, inDim), activations (rows, inDim). */
export interface MatmulDims {
  /** B * T. */
  rows: number;
  inDim: number;
  outDim: number;
}

/** The tiled kernel's tile; chosen by the ladder in gpu/README.md ("Optimisations"). */
export const MATMUL_TILE: TileShape = { bm: 64, bn: 128, bk: 8, tm: 8, tn: 16 };

/**
 * The tiles the autotuner (gpu/engine/autotune.ts) times on a real GPU. The smaller ones exist for the model's
 * own products: 2048 rows by 768 columns make only 192 workgroups of 64x128, too few for 100+ compute units,
 * and 768 of 32x64. Every tile sums over k in the same order, so they all give the same bits.
 */
export const MATMUL_TILES: readonly TileShape[] = [
  MATMUL_TILE,
  { ...MATMUL_TILE, double: true },
  { bm: 128, bn: 128, bk: 8, tm: 8, tn: 16, double: true },
  { bm: 64, bn: 64, bk: 8, tm: 8, tn: 8 },
  { bm: 64, bn: 64, bk: 8, tm: 8, tn: 8, double: true },
  { bm: 32, bn: 64, bk: 8, tm: 4, tn: 8, double: true },
];

/** The three products of a linear layer, which the autotuner tunes separately (their layouts differ). */
export type ProductKind = 'forward' | 'backwardInput' | 'backwardWeight';
export const PRODUCT_KINDS: readonly ProductKind[] = ['forward', 'backwardInput', 'backwardWeight'];

/** Rows of C per workgroup of the lanes kernel (gpu/README.md, "Second round"). */
export const LANES_ROWS = 32;

export interface MatmulOptions {
  /** The tiled kernel's tile for every product, unless `tiles` names one for its kind. */
  tile?: TileShape;
  /** Per-product tiles, as the autotuner picks them. */
  tiles?: Partial<Record<ProductKind, TileShape>>;
  /**
   * Product kinds that run the subgroup-matrix kernel (tensor cores) instead of the tiled one, as the
   * autotuner picks them; needs `f16` and the device's chromium-experimental-subgroup-matrix.
   */
  subgroupMatrix?: Partial<Record<ProductKind, SubgroupMatrixTile>>;
  /**
   * The most FLOPs one dispatch may hold: the guard against the OS's GPU watchdog (Windows resets a GPU whose
   * work runs past ~2 s). The autotuner sets it from the adapter's measured speed (`watchdogDispatchFlops`);
   * until then it is DEFAULT_DISPATCH_FLOPS.
   */
  maxDispatchFlops?: number;
  /**
   * Subgroup size for the lanes kernel (matmul-lanes-wgsl.ts), which then serves every product whose shape
   * it fits; null keeps the tiled kernel for all. Default: `cpuSubgroupLanes(device)`; a size that does not divide
   * LANES_ROWS falls back to the tiled kernel.
   */
  lanes?: number | null;
  /**
   * Mixed precision: f16 operands with f32 products and sums (the tiled kernel's `f16` variant; the lanes
   * kernel is then not used). Needs the device's `shader-f16`.
   */
  f16?: boolean;
}

/**
 * The multiply-adds (x2) of one dispatch before the adapter's speed is known. Windows resets a GPU whose work
 * runs past ~2 s; at 2^31 FLOPs a dispatch stays far below that even on a slow integrated GPU, so big products
 * are split into several dispatches along C's rows (and columns when one tile row is still too much). On a
 * fast GPU that split costs 2-5x (gpu/README.md), so once a product has been timed the cap comes from
 * `watchdogDispatchFlops` instead.
 */
export const DEFAULT_DISPATCH_FLOPS = 2 ** 31;

/** Seconds of GPU work one dispatch may take: an eighth of Windows' 2 s watchdog, for slower moments. */
export const WATCHDOG_BUDGET_S = 0.25;

/** The dispatch cap for an adapter measured at `flopsPerSecond` (never below the default guard). */
export function watchdogDispatchFlops(flopsPerSecond: number): number {
  if (!(flopsPerSecond > 0) || !Number.isFinite(flopsPerSecond))
    throw new Error(`watchdogDispatchFlops: a measured speed must be positive, got ${flopsPerSecond}`);
  return Math.max(DEFAULT_DISPATCH_FLOPS, flopsPerSecond * WATCHDOG_BUDGET_S);
}

const MAX_GROUPS_PER_DIM = 65535;
const F32 = 4;
const UNIFORM_BYTES = 32;

interface Product {
  label: string;
  a: TensorRef;
  aLayout: ALayout;
  b: TensorRef;
  bLayout: BLayout;
  c: TensorRef;
  bias: TensorRef | null;
  accumulate: boolean;
  epilogue: Epilogue;
  /** Binding 5 of the epilogue: gelu's output, or geluBackward's pre-activation input. */
  extra: TensorRef | null;
  kind: ProductKind;
  m: number;
  n: number;
  k: number;
}

interface Chunk {
  mOffset: number;
  nOffset: number;
  mCount: number;
  nCount: number;
}

function checkDims(dims: MatmulDims): void {
  for (const key of ['rows', 'inDim', 'outDim'] as const) {
    const v = dims[key];
    if (!Number.isInteger(v) || v < 1) throw new Error(`matmul ${key} must be a positive integer, got ${v}`);
  }
}

function checkTensor(label: string, name: string, ref: TensorRef, elements: number): void {
  const bytes = elements * F32;
  if (ref.size < bytes) {
    throw new Error(`${label}: ${name} holds ${ref.size} bytes but needs ${bytes} (${elements} f32)`);
  }
  if (ref.offset % 256 !== 0)
    throw new Error(`${label}: ${name} offset ${ref.offset} is not a multiple of 256`);
}

function overlaps(x: TensorRef, y: TensorRef, xBytes: number, yBytes: number): boolean {
  return x.buffer === y.buffer && x.offset < y.offset + yBytes && y.offset < x.offset + xBytes;
}

/** Splits C into pieces of at most `maxFlops`, each a whole number of tiles. */
export function planChunks(
  m: number,
  n: number,
  k: number,
  tile: Pick<TileShape, 'bm' | 'bn'>,
  maxFlops: number,
): Chunk[] {
  const tileRowFlops = 2 * tile.bm * n * k;
  const chunks: Chunk[] = [];
  if (tileRowFlops <= maxFlops && Math.ceil(n / tile.bn) <= MAX_GROUPS_PER_DIM) {
    // WebGPU allows at most 65535 workgroups along one dispatch dimension.
    const tileRows = Math.min(MAX_GROUPS_PER_DIM, Math.max(1, Math.floor(maxFlops / tileRowFlops)));
    const rowsPer = tileRows * tile.bm;
    for (let r = 0; r < m; r += rowsPer)
      chunks.push({ mOffset: r, nOffset: 0, mCount: Math.min(rowsPer, m - r), nCount: n });
    return chunks;
  }
  const tileFlops = 2 * tile.bm * tile.bn * k;
  const tileCols = Math.min(MAX_GROUPS_PER_DIM, Math.max(1, Math.floor(maxFlops / tileFlops)));
  const colsPer = tileCols * tile.bn;
  for (let r = 0; r < m; r += tile.bm) {
    for (let c = 0; c < n; c += colsPer) {
      chunks.push({
        mOffset: r,
        nOffset: c,
        mCount: Math.min(tile.bm, m - r),
        nCount: Math.min(colsPer, n - c),
      });
    }
  }
  return chunks;
}

function binding(ref: TensorRef, elements: number): GPUBufferBinding {
  return { buffer: ref.buffer, offset: ref.offset, size: elements * F32 };
}

/**
 * The matrix products of a linear layer y = x W^T + b, forward and backward, as WGSL kernels: the tiled one,
 * or on CPU adapters the lanes one where the shape fits. Pipelines compile once per instance and variant;
 * every call builds its uniforms and bind groups once and returns an op whose encode() only records
 * dispatches. Backward passes accumulate into their outputs. Reductions run in a fixed order, so results are
 * bit-identical from run to run on one device.
 */
export class Matmul {
  private readonly pipelines: PipelineCache;
  /** The tiled kernel's tile per product kind. */
  readonly tiles: Readonly<Record<ProductKind, TileShape>>;
  readonly maxDispatchFlops: number;
  /** Subgroup size of the lanes kernel, or null when it is not used. */
  readonly lanes: number | null;
  readonly f16: boolean;
  readonly subgroupMatrix: Readonly<Partial<Record<ProductKind, SubgroupMatrixTile>>>;

  constructor(
    private readonly device: GPUDevice,
    options: MatmulOptions = {},
  ) {
    this.pipelines = new PipelineCache(device);
    const tile = options.tile ?? MATMUL_TILE;
    this.tiles = {
      forward: options.tiles?.forward ?? tile,
      backwardInput: options.tiles?.backwardInput ?? tile,
      backwardWeight: options.tiles?.backwardWeight ?? tile,
    };
    this.maxDispatchFlops = options.maxDispatchFlops ?? DEFAULT_DISPATCH_FLOPS;
    if (!(this.maxDispatchFlops > 0)) throw new Error(`maxDispatchFlops must be positive`);
    const lanes = options.lanes === undefined ? cpuSubgroupLanes(device) : options.lanes;
    this.f16 = options.f16 ?? false;
    if (this.f16 && !device.features.has('shader-f16'))
      throw new Error('matmul: f16 operands need the shader-f16 feature, which this device lacks');
    this.lanes = !this.f16 && lanes !== null && LANES_ROWS % lanes === 0 ? lanes : null;
    this.subgroupMatrix = { ...options.subgroupMatrix };
    if (Object.keys(this.subgroupMatrix).length > 0) {
      if (!this.f16) throw new Error('matmul: the subgroup-matrix kernel runs f16 operands; pass f16: true');
      if (!device.features.has(SUBGROUP_MATRIX_FEATURE))
        throw new Error(
          `matmul: the subgroup-matrix kernel needs ${SUBGROUP_MATRIX_FEATURE}, which this device lacks`,
        );
    }
  }

  /**
   * out(rows,outDim) = inp(rows,inDim) · weight(outDim,inDim)^T + bias; with `gelu`, also gelu = GELU(out) in
   * the same launch (the MLP keeps both for its backward pass).
   */
  forward(a: {
    out: TensorRef;
    inp: TensorRef;
    weight: TensorRef;
    bias: TensorRef | null;
    dims: MatmulDims;
    gelu?: TensorRef;
  }): EncodedOp {
    checkDims(a.dims);
    const { rows, inDim, outDim } = a.dims;
    return this.product({
      label: `matmul.forward${a.gelu ? '+gelu' : ''} ${rows}x${inDim}->${outDim}`,
      a: a.inp,
      aLayout: 'mk',
      b: a.weight,
      bLayout: 'nk',
      c: a.out,
      bias: a.bias,
      accumulate: false,
      epilogue: a.gelu ? 'gelu' : 'none',
      extra: a.gelu ?? null,
      kind: 'forward',
      m: rows,
      n: outDim,
      k: inDim,
    });
  }

  /**
   * dinp(rows,inDim) += dout(rows,outDim) · weight(outDim,inDim); with `overwrite`, dinp = the product, which
   * spares zeroing a gradient that has no other contribution. With `geluInput` (the pre-activation x of a GELU
   * that produced this layer's input), dinp = gelu'(x) * the product: the GELU's backward in the same launch.
   */
  backwardInput(a: {
    dinp: TensorRef;
    dout: TensorRef;
    weight: TensorRef;
    dims: MatmulDims;
    overwrite?: boolean;
    geluInput?: TensorRef;
  }): EncodedOp {
    checkDims(a.dims);
    const { rows, inDim, outDim } = a.dims;
    if (a.geluInput && !a.overwrite)
      throw new Error('matmul.backwardInput: the fused GELU backward overwrites dinp; pass overwrite: true');
    return this.product({
      label: `matmul.backwardInput${a.geluInput ? '+gelu' : ''} ${rows}x${outDim}->${inDim}`,
      a: a.dout,
      aLayout: 'mk',
      b: a.weight,
      bLayout: 'kn',
      c: a.dinp,
      bias: null,
      accumulate: !a.overwrite,
      epilogue: a.geluInput ? 'geluBackward' : 'none',
      extra: a.geluInput ?? null,
      kind: 'backwardInput',
      m: rows,
      n: inDim,
      k: outDim,
    });
  }

  /** dweight(outDim,inDim) += dout^T · inp ; dbias(outDim) += column sums of dout (when given) */
  backwardWeight(a: {
    dweight: TensorRef;
    dbias: TensorRef | null;
    dout: TensorRef;
    inp: TensorRef;
    dims: MatmulDims;
  }): EncodedOp {
    checkDims(a.dims);
    const { rows, inDim, outDim } = a.dims;
    const weightOp = this.product({
      label: `matmul.backwardWeight ${outDim}x${inDim} over ${rows}`,
      a: a.dout,
      aLayout: 'km',
      b: a.inp,
      bLayout: 'kn',
      c: a.dweight,
      bias: null,
      accumulate: true,
      epilogue: 'none',
      extra: null,
      kind: 'backwardWeight',
      m: outDim,
      n: inDim,
      k: rows,
    });
    if (!a.dbias) return weightOp;
    const biasOp = this.columnSum(a.dbias, a.dout, rows, outDim);
    return {
      label: weightOp.label,
      encode(pass) {
        weightOp.encode(pass);
        biasOp.encode(pass);
      },
    };
  }

  private uniform(label: string, values: number[]): GPUBuffer {
    const buf = this.device.createBuffer({
      label: `${label} dims`,
      size: UNIFORM_BYTES,
      usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST,
    });
    const data = new Uint32Array(UNIFORM_BYTES / 4);
    data.set(values);
    this.device.queue.writeBuffer(buf, 0, data);
    return buf;
  }

  private product(p: Product): EncodedOp {
    const { m, n, k } = p;
    const aElems = m * k;
    const bElems = k * n;
    const cElems = m * n;
    checkTensor(p.label, 'A', p.a, aElems);
    checkTensor(p.label, 'B', p.b, bElems);
    checkTensor(p.label, 'output', p.c, cElems);
    if (p.bias) checkTensor(p.label, 'bias', p.bias, n);
    if (p.extra) checkTensor(p.label, p.epilogue === 'gelu' ? 'gelu output' : 'GELU input', p.extra, cElems);
    const inputs: [TensorRef, number][] = [
      [p.a, aElems],
      [p.b, bElems],
    ];
    if (p.bias) inputs.push([p.bias, n]);
    if (p.epilogue === 'geluBackward') inputs.push([p.extra!, cElems]);
    const outputs: TensorRef[] = p.epilogue === 'gelu' ? [p.c, p.extra!] : [p.c];
    for (const [ref, elems] of inputs) {
      if (outputs.some((out) => overlaps(ref, out, elems * F32, cElems * F32)))
        throw new Error(`${p.label}: output overlaps an input`);
    }
    if (p.epilogue === 'gelu' && overlaps(p.c, p.extra!, cElems * F32, cElems * F32))
      throw new Error(`${p.label}: the gelu output overlaps the product`);
    const inputsWritable = inputs.some(([ref]) => outputs.some((out) => ref.buffer === out.buffer));
    const { pipeline, tile } = this.kernelFor(p, inputsWritable);
    const layout = pipeline.getBindGroupLayout(0);
    const dispatches = planChunks(m, n, k, tile, this.maxDispatchFlops).map((chunk) => {
      const entries: GPUBindGroupEntry[] = [
        { binding: 0, resource: { buffer: this.uniform(p.label, [m, n, k, chunk.mOffset, chunk.nOffset]) } },
        { binding: 1, resource: binding(p.a, aElems) },
        { binding: 2, resource: binding(p.b, bElems) },
        { binding: 3, resource: binding(p.c, cElems) },
      ];
      if (p.bias) entries.push({ binding: 4, resource: binding(p.bias, n) });
      if (p.extra) entries.push({ binding: 5, resource: binding(p.extra, cElems) });
      return {
        bindGroup: this.device.createBindGroup({ label: p.label, layout, entries }),
        x: Math.ceil(chunk.nCount / tile.bn),
        y: Math.ceil(chunk.mCount / tile.bm),
      };
    });
    return {
      label: p.label,
      encode(pass) {
        pass.setPipeline(pipeline);
        for (const d of dispatches) {
          pass.setBindGroup(0, d.bindGroup);
          pass.dispatchWorkgroups(d.x, d.y);
        }
      },
    };
  }

  /** The pipeline for a product, and the block of C one of its workgroups covers. */
  private kernelFor(
    p: Product,
    inputsWritable: boolean,
  ): { pipeline: GPUComputePipeline; tile: Pick<TileShape, 'bm' | 'bn'> } {
    const common = {
      a: p.aLayout,
      b: p.bLayout,
      bias: p.bias !== null,
      accumulate: p.accumulate,
      inputsWritable,
      epilogue: p.epilogue,
    };
    const blocks = this.subgroupMatrix[p.kind];
    if (blocks) {
      const variant: SubgroupMatrixVariant = { ...common, tile: blocks };
      return {
        pipeline: this.pipelines.get(`matmul subgroup-matrix ${JSON.stringify(variant)}`, () =>
          subgroupMatrixShader(variant),
        ),
        tile: subgroupMatrixSpan(blocks),
      };
    }
    if (this.lanes !== null && lanesProductFits(p.aLayout, p.m, p.n, p.k)) {
      const variant: LanesVariant = { ...common, lanes: this.lanes, rows: LANES_ROWS };
      return {
        pipeline: this.pipelines.get(`matmul lanes ${JSON.stringify(variant)}`, () =>
          lanesMatmulShader(variant),
        ),
        tile: { bm: LANES_ROWS, bn: lanesTileWidth(variant) },
      };
    }
    const tile = this.tiles[p.kind];
    const variant: MatmulVariant = {
      ...common,
      vec4: this.vec4Fits(p),
      tile,
      ...(this.f16 && { f16: true }),
    };
    return {
      pipeline: this.pipelines.get(`matmul ${JSON.stringify(variant)}`, () => matmulShader(variant)),
      tile,
    };
  }

  private vec4Fits(p: Product): boolean {
    const aContig = p.aLayout === 'mk' ? p.k : p.m;
    const bContig = p.bLayout === 'nk' ? p.k : p.n;
    return vec4Width(aContig, bContig, p.n) === 4;
  }

  private columnSum(dbias: TensorRef, dout: TensorRef, rows: number, cols: number): EncodedOp {
    const label = `matmul.backwardBias ${cols} over ${rows}`;
    checkTensor(label, 'dbias', dbias, cols);
    checkTensor(label, 'dout', dout, rows * cols);
    if (overlaps(dout, dbias, rows * cols * F32, cols * F32))
      throw new Error(`${label}: dbias overlaps dout`);
    const inputsWritable = dout.buffer === dbias.buffer;
    const width = vec4Width(cols);
    const pipeline = this.pipelines.get(`matmul columnSum ${inputsWritable} x${width}`, () =>
      columnSumShader(inputsWritable, width === 4),
    );
    const bindGroup = this.device.createBindGroup({
      label,
      layout: pipeline.getBindGroupLayout(0),
      entries: [
        { binding: 0, resource: { buffer: this.uniform(label, [rows, cols / width]) } },
        { binding: 1, resource: binding(dout, rows * cols) },
        { binding: 2, resource: binding(dbias, cols) },
      ],
    });
    const groups = Math.ceil(cols / width / 64);
    return {
      label,
      encode(pass) {
        pass.setPipeline(pipeline);
        pass.setBindGroup(0, bindGroup);
        pass.dispatchWorkgroups(groups);
      },
    };
  }
}
