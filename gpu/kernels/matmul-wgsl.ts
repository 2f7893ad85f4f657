/**
 * WGSL for one tiled matrix product C(M,N) (+)= A(M,K) · B(K,N) (+ bias(N)), with A and B read from either
 * storage order. The three matmul passes of a linear layer are this product with different layouts:
 * forward reads the weight as (N,K), backward-input reads it as (K,N), backward-weight reads dout as (K,M).
 */
import { geluFunctions } from './elementwise.js';

/** How an operand sits in memory: `mk` means row-major (M,K) for A; `nk` means row-major (N,K) for B. */
export type ALayout = 'mk' | 'km';
export type BLayout = 'nk' | 'kn';

/** Workgroup tile BM x BN, stepped through K by BK; each thread owns a TM x TN block of C in registers. */
export interface TileShape {
  bm: number;
  bn: number;
  bk: number;
  tm: number;
  tn: number;
  /**
   * Two workgroup buffers per operand: the next BK slice loads while the current one is multiplied, one barrier
   * per step instead of two. The sum over k keeps its order, so the bits do not change.
   */
  double?: boolean;
}

/** What the product's store adds to C = A · B (+ bias): the layer's activation, fused (llm.c does the same). */
export type Epilogue =
  /** C only. */
  | 'none'
  /** Also gelu(C) into binding 5 (forward of the MLP's first layer: pre-activation and activation both saved). */
  | 'gelu'
  /** C = gelu'(binding 5) * product: the MLP's backward-input through GELU, overwriting C. */
  | 'geluBackward';

export interface MatmulVariant {
  a: ALayout;
  b: BLayout;
  bias: boolean;
  /** C += product instead of C = product. */
  accumulate: boolean;
  /** Global loads and stores as vec4; needs the contiguous extent of every operand to be a multiple of 4. */
  vec4: boolean;
  /**
   * Inputs declared read_write, for when an input shares a GPUBuffer with the output: WebGPU forbids a
   * buffer bound both read-only and writable in one dispatch, but allows several writable bindings.
   */
  inputsWritable: boolean;
  tile: TileShape;
  epilogue: Epilogue;
  /**
   * Mixed precision (needs the device's `shader-f16`): operands are rounded to f16 as they are staged into
   * workgroup memory, which halves it; every product and sum stays f32, as on tensor cores.
   */
  f16?: boolean;
}

/** `x` converted to `type` when `convert`, else its text unchanged (f32 shaders keep their exact text). */
function convertIf(convert: boolean, type: string, x: string): string {
  return convert ? `${type}(${x})` : x;
}

export function threadsPerWorkgroup(tile: TileShape): number {
  return (tile.bm / tile.tm) * (tile.bn / tile.tn);
}

export function checkTile(tile: TileShape): void {
  const { bm, bn, bk, tm, tn } = tile;
  const threads = threadsPerWorkgroup(tile);
  const ok =
    bm % tm === 0 &&
    bn % tn === 0 &&
    tm % 4 === 0 &&
    tn % 4 === 0 &&
    bk % 4 === 0 &&
    ((bm * bk) / 4) % threads === 0 &&
    ((bn * bk) / 4) % threads === 0;
  if (!ok) throw new Error(`matmul tile ${JSON.stringify(tile)} does not divide evenly among its threads`);
}

/** WGSL expression for one element of an operand, zero outside the matrix. */
function scalarLoad(buf: string, row: string, col: string, rows: string, cols: string): string {
  return `select(0.0, ${buf}[(${row}) * ${cols} + (${col})], (${row}) < ${rows} && (${col}) < ${cols})`;
}

/**
 * Statements that stage one BK slice of an operand into workgroup memory as `tileVar[k * (span/4) + i/4]`,
 * k-major so the inner loop reads 4 consecutive rows (or columns) of C's block as one vec4.
 * `kMajor` says the operand is stored (K, span) in memory; otherwise (span, K) and the slice is transposed.
 */
function stageTile(o: {
  buf: string;
  tileVar: string;
  span: number;
  spanExtent: string;
  spanStart: string;
  kMajor: boolean;
  bk: number;
  threads: number;
  vec4: boolean;
  /** Tiles of f16 (mixed precision). */
  f16: boolean;
  /** First k of the slice (WGSL expression). */
  k0: string;
  /** Where the slice starts in tileVar (WGSL expression; the second buffer when double-buffered). */
  base: string;
}): string {
  const { buf, tileVar, span, spanExtent, spanStart, kMajor, bk, threads, vec4, f16, k0, base } = o;
  const perThread = (span * bk) / 4 / threads;
  const lines: string[] = [];
  for (let t = 0; t < perThread; t++) {
    const idx = `(li + ${t * threads}u)`;
    if (kMajor) {
      // Row k of the slice is contiguous in memory along the span: copy vec4s straight across.
      const kk = `${idx} / ${span / 4}u`;
      const sv = `${idx} % ${span / 4}u`;
      const gk = `(${k0} + ${kk})`;
      const gs = `(${spanStart} + ${sv} * 4u)`;
      const value = vec4
        ? `select(vec4<f32>(0.0), ${buf}[(${gk} * ${spanExtent} + ${gs}) / 4u], ${gk} < dims.K && ${gs} < ${spanExtent})`
        : `vec4<f32>(${[0, 1, 2, 3].map((c) => scalarLoad(buf, gk, `${gs} + ${c}u`, 'dims.K', spanExtent)).join(', ')})`;
      lines.push(`${tileVar}[${base} + ${idx}] = ${convertIf(f16, 'vec4<f16>', value)};`);
    } else {
      // Memory runs along K: read 4 consecutive k of one span row and scatter them down the tile's k axis.
      const sRow = `${idx} / ${bk / 4}u`;
      const kv = `${idx} % ${bk / 4}u`;
      const gs = `(${spanStart} + ${sRow})`;
      const gk = `(${k0} + ${kv} * 4u)`;
      const value = vec4
        ? `select(vec4<f32>(0.0), ${buf}[(${gs} * dims.K + ${gk}) / 4u], ${gs} < ${spanExtent} && ${gk} < dims.K)`
        : `vec4<f32>(${[0, 1, 2, 3].map((c) => scalarLoad(buf, gs, `${gk} + ${c}u`, spanExtent, 'dims.K')).join(', ')})`;
      lines.push(`{`);
      lines.push(`  let v = ${convertIf(f16, 'vec4<f16>', value)};`);
      lines.push(`  let s = ${sRow};`);
      lines.push(`  let at = ${base} + ${kv} * 4u * ${span / 4}u + s / 4u;`);
      for (let c = 0; c < 4; c++) lines.push(`  ${tileVar}[at + ${c * (span / 4)}u][s % 4u] = v[${c}];`);
      lines.push(`}`);
    }
  }
  return lines.join('\n    ');
}

/** Binding 5 and the GELU functions an epilogue needs, over element type `el`. */
export function epilogueDeclarations(epilogue: Epilogue, el: string, inAccess: string): string {
  if (epilogue === 'none') return '';
  const decl =
    epilogue === 'gelu'
      ? `@group(0) @binding(5) var<storage, read_write> act: array<${el}>;`
      : `@group(0) @binding(5) var<storage, ${inAccess}> pre: array<${el}>;`;
  return `${decl}\n${geluFunctions(el)}`;
}

/** What a product's store does besides writing C; shared by every matmul kernel family. */
export type StoreVariant = Pick<MatmulVariant, 'epilogue' | 'bias' | 'accumulate'>;

/** The value stored at C's element(s) `at` for accumulator `acc` and column expression `col`. */
function epilogueValue(v: StoreVariant, acc: string, col: string, at: string): string {
  if (v.epilogue === 'geluBackward') return `geluGrad(pre[${at}]) * ${acc}`;
  let value = acc;
  if (v.bias) value += ` + bias[${col}]`;
  if (v.accumulate) value += ` + c[${at}]`;
  return value;
}

/** Statements storing accumulator `acc` at C's element(s) `at` (column `col`), with the epilogue. */
export function storeOne(v: StoreVariant, acc: string, col: string, at: string): string[] {
  const lines = [`let at = ${at};`];
  if (v.epilogue === 'gelu') {
    lines.push(`let y = ${epilogueValue(v, acc, col, 'at')};`, `c[at] = y;`, `act[at] = gelu(y);`);
  } else {
    lines.push(`c[at] = ${epilogueValue(v, acc, col, 'at')};`);
  }
  return lines;
}

function storeBlock(v: MatmulVariant): string {
  const { tm, tn } = v.tile;
  const lines: string[] = [];
  for (let i = 0; i < tm; i++) {
    lines.push(`if (rowBase + ${i}u < dims.M) {`);
    lines.push(`  let row = rowBase + ${i}u;`);
    for (let j = 0; j < tn / 4; j++) {
      const acc = `acc[${i * (tn / 4) + j}]`;
      const col = `(n0 + ${vecCol(v.tile, j)} * 4u)`;
      if (v.vec4) {
        lines.push(`  if (${col} < dims.N) {`);
        for (const l of storeOne(v, acc, `${col} / 4u`, `(row * dims.N + ${col}) / 4u`))
          lines.push(`    ${l}`);
        lines.push(`  }`);
      } else {
        for (let e = 0; e < 4; e++) {
          const ce = `${col} + ${e}u`;
          lines.push(`  if (${ce} < dims.N) {`);
          for (const l of storeOne(v, `${acc}[${e}]`, ce, `row * dims.N + ${ce}`)) lines.push(`    ${l}`);
          lines.push(`  }`);
        }
      }
    }
    lines.push(`}`);
  }
  return lines.join('\n  ');
}

/**
 * Index of thread tx's j-th vec4 column within the tile. Columns interleave (x, x + BN/TN, ...) rather than
 * run contiguously, so neighbouring threads read neighbouring vec4s of Bs and write neighbouring vec4s of C.
 */
function vecCol(tile: TileShape, j: number): string {
  return `(${j * (tile.bn / tile.tn)}u + tx)`;
}

function innerProduct(tile: TileShape, f16: boolean): string {
  const { bm, bn, tm, tn } = tile;
  const lines: string[] = [];
  for (let i = 0; i < tm / 4; i++)
    lines.push(
      `let a${i} = ${convertIf(f16, 'vec4<f32>', `As[aBase + k * ${bm / 4}u + ty * ${tm / 4}u + ${i}u]`)};`,
    );
  for (let j = 0; j < tn / 4; j++)
    lines.push(
      `let b${j} = ${convertIf(f16, 'vec4<f32>', `Bs[bBase + k * ${bn / 4}u + ${vecCol(tile, j)}]`)};`,
    );
  for (let i = 0; i < tm; i++) {
    for (let j = 0; j < tn / 4; j++) {
      const acc = `acc[${i * (tn / 4) + j}]`;
      lines.push(`${acc} = fma(vec4<f32>(a${Math.floor(i / 4)}[${i % 4}]), b${j}, ${acc});`);
    }
  }
  return lines.join('\n      ');
}

/** The compute shader for one variant; entry point `main`, workgroup size (BN/TN, BM/TM). */
export function matmulShader(v: MatmulVariant): string {
  checkTile(v.tile);
  const { bm, bn, bk, tm, tn } = v.tile;
  const threads = threadsPerWorkgroup(v.tile);
  const el = v.vec4 ? 'vec4<f32>' : 'f32';
  const inAccess = v.inputsWritable ? 'read_write' : 'read';
  const biasDecl = v.bias ? `@group(0) @binding(4) var<storage, ${inAccess}> bias: array<${el}>;` : '';
  const tileA = (bk * bm) / 4;
  const tileB = (bk * bn) / 4;
  const buffers = v.tile.double ? 2 : 1;
  const f16 = v.f16 ?? false;
  const tileEl = f16 ? 'vec4<f16>' : 'vec4<f32>';
  const stage = (k0: string, aBase: string, bBase: string): string =>
    [
      stageTile({
        buf: 'a',
        tileVar: 'As',
        span: bm,
        spanExtent: 'dims.M',
        spanStart: 'm0',
        kMajor: v.a === 'km',
        bk,
        threads,
        vec4: v.vec4,
        f16,
        k0,
        base: aBase,
      }),
      stageTile({
        buf: 'b',
        tileVar: 'Bs',
        span: bn,
        spanExtent: 'dims.N',
        spanStart: 'n0',
        kMajor: v.b === 'kn',
        bk,
        threads,
        vec4: v.vec4,
        f16,
        k0,
        base: bBase,
      }),
    ].join('\n    ');
  // Double-buffered: slice s+1 loads into the other buffer while slice s is multiplied; the one barrier per step
  // both publishes slice s+1 and ends every read of slice s before step s+2 overwrites its buffer.
  const loop = v.tile.double
    ? `${stage('0u', '0u', '0u')}
  workgroupBarrier();
  for (var k0 = 0u; k0 < dims.K; k0 += ${bk}u) {
    let cur = (k0 / ${bk}u) % 2u;
    let aBase = cur * ${tileA}u;
    let bBase = cur * ${tileB}u;
    if (k0 + ${bk}u < dims.K) {
      ${stage(`k0 + ${bk}u`, `(1u - cur) * ${tileA}u`, `(1u - cur) * ${tileB}u`)}
    }
    for (var k = 0u; k < ${bk}u; k++) {
      ${innerProduct(v.tile, f16)}
    }
    workgroupBarrier();
  }`
    : `for (var k0 = 0u; k0 < dims.K; k0 += ${bk}u) {
    ${stage('k0', '0u', '0u')}
    workgroupBarrier();
    let aBase = 0u;
    let bBase = 0u;
    for (var k = 0u; k < ${bk}u; k++) {
      ${innerProduct(v.tile, f16)}
    }
    workgroupBarrier();
  }`;
  const epilogueDecl = epilogueDeclarations(v.epilogue, el, inAccess);
  return /* wgsl */ `${f16 ? 'enable f16;' : ''}
struct Dims { M: u32, N: u32, K: u32, mOffset: u32, nOffset: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, ${inAccess}> a: array<${el}>;
@group(0) @binding(2) var<storage, ${inAccess}> b: array<${el}>;
@group(0) @binding(3) var<storage, read_write> c: array<${el}>;
${biasDecl}
${epilogueDecl}

var<workgroup> As: array<${tileEl}, ${buffers * tileA}>;
var<workgroup> Bs: array<${tileEl}, ${buffers * tileB}>;

@compute @workgroup_size(${bn / tn}, ${bm / tm})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u,
        @builtin(local_invocation_index) li: u32) {
  let tx = lid.x;
  let ty = lid.y;
  let m0 = dims.mOffset + wid.y * ${bm}u;
  let n0 = dims.nOffset + wid.x * ${bn}u;
  var acc: array<vec4<f32>, ${(tm * tn) / 4}>;
  ${loop}
  let rowBase = m0 + ty * ${tm}u;
  ${storeBlock(v)}
}
`;
}

/**
 * dbias(N) += column sums of dout(R,N). One thread per column (or vec4 of columns when N % 4 == 0, which on CPU
 * adapters quarters the per-lane loads) walks the rows in order, so the sum is deterministic and coalesced
 * across neighbouring threads.
 */
export function columnSumShader(inputsWritable: boolean, vec4: boolean): string {
  const E = vec4 ? 'vec4<f32>' : 'f32';
  return /* wgsl */ `
struct Dims { rows: u32, cols: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, ${inputsWritable ? 'read_write' : 'read'}> dout: array<${E}>;
@group(0) @binding(2) var<storage, read_write> dbias: array<${E}>;

@compute @workgroup_size(64)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let col = gid.x;
  if (col >= dims.cols) { return; }
  var sum = ${E}(0.0);
  for (var r = 0u; r < dims.rows; r++) { sum += dout[r * dims.cols + col]; }
  dbias[col] += sum;
}
`;
}
