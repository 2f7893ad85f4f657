/**
 * The matrix product on tensor cores, through Dawn's `chromium-experimental-subgroup-matrix` (WGSL
 * `chromium_experimental_subgroup_matrix`; Dawn's docs/dawn/features/subgroup_matrix.md): f16 operands, f32
 * products and sums, for mixed precision. Dawn offers the feature behind the allow_unsafe_apis toggle, on
 * Vulkan drivers with cooperative matrices (NVIDIA) and on Apple GPUs; the adapter lists the block shapes and
 * types its hardware runs in `GPUAdapterInfo.subgroupMatrixConfigs`. Neither lavapipe nor SwiftShader offers
 * it, and this kernel has not yet run on a GPU: the autotuner (engine/autotune.ts) checks its output against
 * the plain tiled kernel before it may pick it.
 */
import {
  type ALayout,
  type BLayout,
  type StoreVariant,
  epilogueDeclarations,
  storeOne,
} from './matmul-wgsl.js';

export const SUBGROUP_MATRIX_FEATURE = 'chromium-experimental-subgroup-matrix';

/** A block shape the kernel runs, from one of the adapter's configurations, and how many blocks a workgroup owns. */
export interface SubgroupMatrixTile {
  /** The hardware block: left M x K, right K x N, result M x N. */
  m: number;
  n: number;
  k: number;
  /** Result blocks per workgroup along C's rows and columns: a workgroup owns (tm·m) x (tn·n) of C. */
  tm: number;
  tn: number;
  /** The adapter's largest subgroup: the workgroup size, so that a workgroup is one subgroup. */
  subgroupSize: number;
}

export interface SubgroupMatrixVariant extends StoreVariant {
  a: ALayout;
  b: BLayout;
  /** Inputs declared read_write (an input shares a GPUBuffer with the output); see MatmulVariant. */
  inputsWritable: boolean;
  tile: SubgroupMatrixTile;
}

/** One entry of GPUAdapterInfo.subgroupMatrixConfigs (not yet in @webgpu/types). */
interface SubgroupMatrixConfig {
  componentType: string;
  resultComponentType: string;
  M: number;
  N: number;
  K: number;
}

/** Blocks of the hardware shape per workgroup that the autotuner tries (2x2 and 4x4 result blocks). */
const BLOCKS_PER_WORKGROUP: readonly [tm: number, tn: number][] = [
  [2, 2],
  [4, 4],
];

/** K blocks staged into workgroup memory per step: fewer barriers than one. */
const K_BLOCKS = 2;

/** The workgroup's extent of C, rows by columns. */
export function subgroupMatrixSpan(t: SubgroupMatrixTile): { bm: number; bn: number } {
  return { bm: t.tm * t.m, bn: t.tn * t.n };
}

/** Bytes of workgroup memory a tile's kernel declares: f16 slices of A and B, and C's block in f32. */
export function subgroupMatrixWorkgroupBytes(t: SubgroupMatrixTile): number {
  const { bm, bn } = subgroupMatrixSpan(t);
  const bk = K_BLOCKS * t.k;
  return 2 * (bm * bk + bk * bn) + 4 * bm * bn;
}

/**
 * The tiles the kernel can run on `device` (f16 x f16 -> f32 configurations, within its workgroup memory),
 * or none and why: the reason is what a log or a skipped test says.
 */
export function subgroupMatrixSupport(device: GPUDevice): {
  tiles: SubgroupMatrixTile[];
  reason: string | null;
} {
  const none = (reason: string) => ({ tiles: [], reason });
  if (!device.features.has(SUBGROUP_MATRIX_FEATURE))
    return none(
      `the device lacks ${SUBGROUP_MATRIX_FEATURE} (Dawn offers it behind allow_unsafe_apis, on Vulkan ` +
        'drivers with cooperative matrices and on Apple GPUs)',
    );
  if (!device.features.has('shader-f16')) return none('the device lacks shader-f16');
  const info = device.adapterInfo as GPUAdapterInfo & { subgroupMatrixConfigs?: SubgroupMatrixConfig[] };
  const subgroupSize = info.subgroupMaxSize;
  if (!subgroupSize) return none('the adapter reports no subgroupMaxSize');
  const configs = [...(info.subgroupMatrixConfigs ?? [])];
  const usable = configs.filter((c) => c.componentType === 'f16' && c.resultComponentType === 'f32');
  if (usable.length === 0) {
    const offered = configs.map((c) => `${c.componentType}->${c.resultComponentType} ${c.M}x${c.N}x${c.K}`);
    return none(`no f16 -> f32 configuration among the adapter's [${offered.join(', ')}]`);
  }
  const limit = device.limits.maxComputeWorkgroupStorageSize;
  const tiles = usable.flatMap((c) =>
    BLOCKS_PER_WORKGROUP.map(([tm, tn]) => ({ m: c.M, n: c.N, k: c.K, tm, tn, subgroupSize })).filter(
      (t) => subgroupMatrixWorkgroupBytes(t) <= limit,
    ),
  );
  return tiles.length > 0
    ? { tiles, reason: null }
    : none(`no tile fits the device's ${limit} bytes of workgroup memory`);
}

export function subgroupMatrixName(t: SubgroupMatrixTile): string {
  return `subgroup-matrix ${t.m}x${t.n}x${t.k} f16->f32, ${t.tm}x${t.tn} blocks`;
}

/**
 * The statements staging one slice of an operand into workgroup memory as f16, zero outside the matrix:
 * `dst[row * cols + col]`, row-major, from `src` stored with `major` running fastest in memory. The loop
 * index walks memory order, so neighbouring lanes read neighbouring addresses.
 */
function stage(o: {
  src: string;
  dst: string;
  /** The slice's shape in workgroup memory: rows x cols, row-major. */
  rows: number;
  cols: number;
  /** Global row and column of the slice's first element, and the matrix's extents (WGSL expressions). */
  row0: string;
  col0: string;
  rowExtent: string;
  colExtent: string;
  /** True when the operand is stored row-major (its columns adjacent in memory). */
  rowMajor: boolean;
  threads: number;
}): string {
  const { src, dst, rows, cols, row0, col0, rowExtent, colExtent, rowMajor, threads } = o;
  const inner = rowMajor ? cols : rows;
  const [r, c] = rowMajor ? ['e / INNERu', 'e % INNERu'] : ['e % INNERu', 'e / INNERu'];
  const at = rowMajor ? `gr * ${colExtent} + gc` : `gc * ${rowExtent} + gr`;
  return `for (var e = li; e < ${rows * cols}u; e += ${threads}u) {
      let r = ${r.replaceAll('INNER', String(inner))};
      let c = ${c.replaceAll('INNER', String(inner))};
      let gr = ${row0} + r;
      let gc = ${col0} + c;
      ${dst}[r * ${cols}u + c] = f16(select(0.0, ${src}[${at}], gr < ${rowExtent} && gc < ${colExtent}));
    }`;
}

/**
 * The compute shader: C(M,N) (+)= A(M,K) · B(K,N) (+ bias), entry point `main`, a workgroup one subgroup
 * owning (tm·m) x (tn·n) of C. Per step the subgroup stages two K blocks of A and B into workgroup memory as
 * f16 (zero past the edges, so any M, N, K works), then multiplies them block by block into tm·tn result
 * matrices; at the end it stores those to workgroup memory, and each lane applies the epilogue (bias,
 * accumulate, GELU) to its elements on the way to C. Every subgroup-matrix call takes offsets known at
 * compile time and runs in workgroup-uniform control flow, as the extension requires.
 */
export function subgroupMatrixShader(v: SubgroupMatrixVariant): string {
  const t = v.tile;
  const { bm, bn } = subgroupMatrixSpan(t);
  const bk = K_BLOCKS * t.k;
  const s = t.subgroupSize;
  const inAccess = v.inputsWritable ? 'read_write' : 'read';
  const blocks: [number, number][] = [];
  for (let i = 0; i < t.tm; i++) for (let j = 0; j < t.tn; j++) blocks.push([i, j]);
  const multiply: string[] = [];
  for (let kk = 0; kk < K_BLOCKS; kk++) {
    for (let i = 0; i < t.tm; i++)
      multiply.push(
        `let l${kk}_${i} = subgroupMatrixLoad<Left>(&As, ${i * t.m * bk + kk * t.k}u, false, ${bk}u);`,
      );
    for (let j = 0; j < t.tn; j++)
      multiply.push(
        `let r${kk}_${j} = subgroupMatrixLoad<Right>(&Bs, ${kk * t.k * bn + j * t.n}u, false, ${bn}u);`,
      );
    for (const [i, j] of blocks)
      multiply.push(
        `acc${i}_${j} = subgroupMatrixMultiplyAccumulate(l${kk}_${i}, r${kk}_${j}, acc${i}_${j});`,
      );
  }
  const store = storeOne(v, 'Cs[e]', 'col', 'row * dims.N + col');
  return /* wgsl */ `enable f16;
enable chromium_experimental_subgroup_matrix;

struct Dims { M: u32, N: u32, K: u32, mOffset: u32, nOffset: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, ${inAccess}> a: array<f32>;
@group(0) @binding(2) var<storage, ${inAccess}> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
${v.bias ? `@group(0) @binding(4) var<storage, ${inAccess}> bias: array<f32>;` : ''}
${epilogueDeclarations(v.epilogue, 'f32', inAccess)}

alias Left = subgroup_matrix_left<f16, ${t.k}, ${t.m}>;
alias Right = subgroup_matrix_right<f16, ${t.n}, ${t.k}>;
alias Result = subgroup_matrix_result<f32, ${t.n}, ${t.m}>;

var<workgroup> As: array<f16, ${bm * bk}>;
var<workgroup> Bs: array<f16, ${bk * bn}>;
var<workgroup> Cs: array<f32, ${bm * bn}>;

@compute @workgroup_size(${s})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) li: u32) {
  let m0 = dims.mOffset + wid.y * ${bm}u;
  let n0 = dims.nOffset + wid.x * ${bn}u;
  ${blocks.map(([i, j]) => `var acc${i}_${j} = Result();`).join('\n  ')}
  for (var k0 = 0u; k0 < dims.K; k0 += ${bk}u) {
    ${stage({
      src: 'a',
      dst: 'As',
      rows: bm,
      cols: bk,
      row0: 'm0',
      col0: 'k0',
      rowExtent: 'dims.M',
      colExtent: 'dims.K',
      rowMajor: v.a === 'mk',
      threads: s,
    })}
    ${stage({
      src: 'b',
      dst: 'Bs',
      rows: bk,
      cols: bn,
      row0: 'k0',
      col0: 'n0',
      rowExtent: 'dims.K',
      colExtent: 'dims.N',
      rowMajor: v.b === 'kn',
      threads: s,
    })}
    workgroupBarrier();
    ${multiply.join('\n    ')}
    workgroupBarrier();
  }
  ${blocks.map(([i, j]) => `subgroupMatrixStore(&Cs, ${i * t.m * bn + j * t.n}u, acc${i}_${j}, false, ${bn}u);`).join('\n  ')}
  workgroupBarrier();
  for (var e = li; e < ${bm * bn}u; e += ${s}u) {
    let row = m0 + e / ${bn}u;
    let col = n0 + e % ${bn}u;
    if (row < dims.M && col < dims.N) {
      ${store.join('\n      ')}
    }
  }
}
`;
}
