import type { EncodedOp, TensorRef } from './types.js';
import { cpuSubgroupLanes } from './lanes.js';
import { PipelineCache, vec4Width } from './op.js';
import {
  type ALayout,
  type BLayout,
  type MatmulVariant,
  type TileShape,
  columnSumShader,
  matmulShader,
} from './matmul-wgsl.js';
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

/** Rows of C per workgroup of the lanes kernel (gpu/README.md, "Second round"). */
export const LANES_ROWS = 32;

export interface MatmulOptions {
  tile?: TileShape;
  /**
   * Subgroup size for the lanes kernel (matmul-lanes-wgsl.ts), which then serves every product whose shape
   * it fits; null keeps the tiled kernel for all. Default: `cpuSubgroupLanes(device)`; a size that does not divide
   * LANES_ROWS falls back to the tiled kernel.
   */
  lanes?: number | null;
}

/**
 * Upper bound on the multiply-adds (x2) of one dispatch. Windows resets a GPU whose work runs past ~2 s; at
 * 2^31 FLOPs a dispatch stays far below that even on a slow integrated GPU, so big products are split into
 * several dispatches along C's rows (and columns when one tile row is still too much).
 */
export const MAX_DISPATCH_FLOPS = 2 ** 31;

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

/** Splits C into pieces of at most MAX_DISPATCH_FLOPS, each a whole number of tiles. */
export function planChunks(m: number, n: number, k: number, tile: Pick<TileShape, 'bm' | 'bn'>): Chunk[] {
  const tileRowFlops = 2 * tile.bm * n * k;
  const chunks: Chunk[] = [];
  if (tileRowFlops <= MAX_DISPATCH_FLOPS && Math.ceil(n / tile.bn) <= MAX_GROUPS_PER_DIM) {
    // WebGPU allows at most 65535 workgroups along one dispatch dimension.
    const tileRows = Math.min(MAX_GROUPS_PER_DIM, Math.max(1, Math.floor(MAX_DISPATCH_FLOPS / tileRowFlops)));
    const rowsPer = tileRows * tile.bm;
    for (let r = 0; r < m; r += rowsPer)
      chunks.push({ mOffset: r, nOffset: 0, mCount: Math.min(rowsPer, m - r), nCount: n });
    return chunks;
  }
  const tileFlops = 2 * tile.bm * tile.bn * k;
  const tileCols = Math.min(MAX_GROUPS_PER_DIM, Math.max(1, Math.floor(MAX_DISPATCH_FLOPS / tileFlops)));
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
  private readonly tile: TileShape;
  /** Subgroup size of the lanes kernel, or null when it is not used. */
  readonly lanes: number | null;

  constructor(
    private readonly device: GPUDevice,
    options: MatmulOptions = {},
  ) {
    this.pipelines = new PipelineCache(device);
    this.tile = options.tile ?? MATMUL_TILE;
    const lanes = options.lanes === undefined ? cpuSubgroupLanes(device) : options.lanes;
    this.lanes = lanes !== null && LANES_ROWS % lanes === 0 ? lanes : null;
  }

  /** out(rows,outDim) = inp(rows,inDim) · weight(outDim,inDim)^T + bias */
  forward(a: {
    out: TensorRef;
    inp: TensorRef;
    weight: TensorRef;
    bias: TensorRef | null;
    dims: MatmulDims;
  }): EncodedOp {
    checkDims(a.dims);
    const { rows, inDim, outDim } = a.dims;
    return this.product({
      label: `matmul.forward ${rows}x${inDim}->${outDim}`,
      a: a.inp,
      aLayout: 'mk',
      b: a.weight,
      bLayout: 'nk',
      c: a.out,
      bias: a.bias,
      accumulate: false,
      m: rows,
      n: outDim,
      k: inDim,
    });
  }

  /**
   * dinp(rows,inDim) += dout(rows,outDim) · weight(outDim,inDim); with `overwrite`, dinp = the product, which
   * spares zeroing a gradient that has no other contribution.
   */
  backwardInput(a: {
    dinp: TensorRef;
    dout: TensorRef;
    weight: TensorRef;
    dims: MatmulDims;
    overwrite?: boolean;
  }): EncodedOp {
    checkDims(a.dims);
    const { rows, inDim, outDim } = a.dims;
    return this.product({
      label: `matmul.backwardInput ${rows}x${outDim}->${inDim}`,
      a: a.dout,
      aLayout: 'mk',
      b: a.weight,
      bLayout: 'kn',
      c: a.dinp,
      bias: null,
      accumulate: !a.overwrite,
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
    const inputs: [TensorRef, number][] = [
      [p.a, aElems],
      [p.b, bElems],
    ];
    if (p.bias) inputs.push([p.bias, n]);
    for (const [ref, elems] of inputs) {
      if (overlaps(ref, p.c, elems * F32, cElems * F32))
        throw new Error(`${p.label}: output overlaps an input`);
    }
    const inputsWritable = inputs.some(([ref]) => ref.buffer === p.c.buffer);
    const { pipeline, tile } = this.kernelFor(p, inputsWritable);
    const layout = pipeline.getBindGroupLayout(0);
    const dispatches = planChunks(m, n, k, tile).map((chunk) => {
      const entries: GPUBindGroupEntry[] = [
        { binding: 0, resource: { buffer: this.uniform(p.label, [m, n, k, chunk.mOffset, chunk.nOffset]) } },
        { binding: 1, resource: binding(p.a, aElems) },
        { binding: 2, resource: binding(p.b, bElems) },
        { binding: 3, resource: binding(p.c, cElems) },
      ];
      if (p.bias) entries.push({ binding: 4, resource: binding(p.bias, n) });
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
    };
    if (this.lanes !== null && lanesProductFits(p.aLayout, p.m, p.n, p.k)) {
      const variant: LanesVariant = { ...common, lanes: this.lanes, rows: LANES_ROWS };
      return {
        pipeline: this.pipelines.get(`matmul lanes ${JSON.stringify(variant)}`, () =>
          lanesMatmulShader(variant),
        ),
        tile: { bm: LANES_ROWS, bn: lanesTileWidth(variant) },
      };
    }
    const variant: MatmulVariant = { ...common, vec4: this.vec4Fits(p), tile: this.tile };
    return {
      pipeline: this.pipelines.get(`matmul ${JSON.stringify(variant)}`, () => matmulShader(variant)),
      tile: this.tile,
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
