/**
 * WGSL for the matrix product C(M,N) (+)= A · B (+ bias) written for adapters that run a subgroup as the SIMD
 * lanes of one CPU thread (lavapipe, SwiftShader). There, every load whose address differs between lanes is a
 * per-lane loop, so the tiled kernel of matmul-wgsl.ts spends most of its time loading the same A values into
 * all eight lanes. Here a workgroup is one subgroup and owns ROWS rows of C by 4 * lanes columns: each lane
 * loads a different vec4 of A, and subgroupBroadcast (a register shuffle on such adapters) hands every value to
 * every lane; each lane loads only the B values of its own 4 columns. No workgroup memory, no barriers.
 *
 * Same memory layouts as matmul-wgsl.ts; needs K and N (and M when A is stored (K,M)) to be multiples of 4.
 * Per output, the sum runs over k in order with fma, exactly as the tiled kernel does, so both give the same
 * bits.
 */
import { type ALayout, type BLayout, type Epilogue, epilogueDeclarations } from './matmul-wgsl.js';

export interface LanesVariant {
  a: ALayout;
  b: BLayout;
  bias: boolean;
  accumulate: boolean;
  inputsWritable: boolean;
  epilogue: Epilogue;
  /** The adapter's subgroup size (fixed: min = max). */
  lanes: number;
  /** Rows of C per workgroup; a multiple of 4 and of `lanes`. */
  rows: number;
}

/** C columns one workgroup covers: each lane owns one vec4 of them. */
export function lanesTileWidth(v: Pick<LanesVariant, 'lanes'>): number {
  return 4 * v.lanes;
}

export function lanesProductFits(a: ALayout, m: number, n: number, k: number): boolean {
  return k % 4 === 0 && n % 4 === 0 && (a === 'mk' || m % 4 === 0);
}

export function checkLanesVariant(v: LanesVariant): void {
  if (!Number.isInteger(v.lanes) || v.lanes < 1 || v.rows % 4 !== 0 || v.rows % v.lanes !== 0)
    throw new Error(
      `lanes matmul: rows ${v.rows} must be a multiple of 4 and of the subgroup size ${v.lanes}`,
    );
}

const XYZW = 'xyzw';

/**
 * Where A(r, k + u) of the current 4-wide k step sits: which vec4 chunk, and which component of it. Chunk q is
 * loaded by lane q % lanes into register q / lanes.
 */
function chunkOf(v: LanesVariant, r: number, u: number): [number, number] {
  // (M,K): a chunk is 4 consecutive k of one row. (K,M): a chunk is 4 consecutive rows at one k.
  return v.a === 'mk' ? [r, u] : [u * (v.rows / 4) + Math.floor(r / 4), r % 4];
}

function loadA(v: LanesVariant): { setup: string[]; step: string[] } {
  const setup: string[] = [];
  const step: string[] = [];
  for (let j = 0; j < v.rows / v.lanes; j++) {
    if (v.a === 'mk') {
      setup.push(`let a${j}At = min(r0 + ${j * v.lanes}u + lane, dims.M - 1u) * k4;`);
      step.push(`let a${j} = a[a${j}At + k / 4u];`);
    } else {
      // Chunk q = j * lanes + lane holds rows 4p..4p+3 (p = q % (rows/4)) at k + q / (rows/4).
      const q = `(${j * v.lanes}u + lane)`;
      setup.push(
        `let a${j}At = (${q} / ${v.rows / 4}u) * m4 + min(r0 / 4u + ${q} % ${v.rows / 4}u, m4 - 1u);`,
      );
      step.push(`let a${j} = a[a${j}At + k * m4];`);
    }
  }
  return { setup, step };
}

function loadB(v: LanesVariant): { setup: string[]; step: string[] } {
  if (v.b === 'kn') {
    return {
      setup: ['let bAt = min(c0, dims.N - 4u) / 4u;'],
      step: [0, 1, 2, 3].map((u) => `let b${u} = b[(k + ${u}u) * n4 + bAt];`),
    };
  }
  // (N,K): each of the lane's 4 columns is a row of B; read 4 k of each and regroup them by k.
  const setup = [0, 1, 2, 3].map((i) => `let col${i}At = min(c0 + ${i}u, dims.N - 1u) * k4;`);
  const step = [0, 1, 2, 3].map((i) => `let col${i} = b[col${i}At + k / 4u];`);
  for (let u = 0; u < 4; u++) {
    const c = XYZW[u];
    step.push(`let b${u} = vec4<f32>(col0.${c}, col1.${c}, col2.${c}, col3.${c});`);
  }
  return { setup, step };
}

function multiplyAdd(v: LanesVariant): string[] {
  const lines: string[] = [];
  const broadcast = new Set<number>();
  for (let r = 0; r < v.rows; r++) {
    for (let u = 0; u < 4; u++) {
      const [chunk, comp] = chunkOf(v, r, u);
      if (!broadcast.has(chunk)) {
        broadcast.add(chunk);
        lines.push(
          `let s${chunk} = subgroupBroadcast(a${Math.floor(chunk / v.lanes)}, ${chunk % v.lanes}u);`,
        );
      }
      lines.push(`acc${r} = fma(vec4<f32>(s${chunk}.${XYZW[comp]}), b${u}, acc${r});`);
    }
  }
  return lines;
}

function store(v: LanesVariant): string[] {
  const lines = ['if (c0 < dims.N) {'];
  for (let r = 0; r < v.rows; r++) {
    // The same expressions, in the same order, as the tiled kernel's store (matmul-wgsl.ts epilogueValue).
    let value = `acc${r}`;
    if (v.bias) value += ' + bias[c0 / 4u]';
    if (v.accumulate) value += ' + c[at]';
    if (v.epilogue === 'geluBackward') value = `geluGrad(pre[at]) * acc${r}`;
    lines.push(`  if (r0 + ${r}u < dims.M) {`);
    lines.push(`    let at = ((r0 + ${r}u) * dims.N + c0) / 4u;`);
    if (v.epilogue === 'gelu') {
      lines.push(`    let y = ${value};`, '    c[at] = y;', '    act[at] = gelu(y);');
    } else {
      lines.push(`    c[at] = ${value};`);
    }
    lines.push('  }');
  }
  lines.push('}');
  return lines;
}

/** The compute shader for one variant: entry point `main`, workgroup size `lanes`, grid (N / (4 lanes), M / rows). */
export function lanesMatmulShader(v: LanesVariant): string {
  checkLanesVariant(v);
  const inAccess = v.inputsWritable ? 'read_write' : 'read';
  const biasDecl = v.bias ? `@group(0) @binding(4) var<storage, ${inAccess}> bias: array<vec4<f32>>;` : '';
  const epilogueDecl = epilogueDeclarations(v.epilogue, 'vec4<f32>', inAccess);
  const a = loadA(v);
  const b = loadB(v);
  const accs = Array.from({ length: v.rows }, (_, r) => `var acc${r} = vec4<f32>(0.0);`);
  const indent = (lines: string[], n: number) => lines.map((l) => ' '.repeat(n) + l).join('\n');
  return /* wgsl */ `enable subgroups;
struct Dims { M: u32, N: u32, K: u32, mOffset: u32, nOffset: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, ${inAccess}> a: array<vec4<f32>>;
@group(0) @binding(2) var<storage, ${inAccess}> b: array<vec4<f32>>;
@group(0) @binding(3) var<storage, read_write> c: array<vec4<f32>>;
${biasDecl}
${epilogueDecl}

@compute @workgroup_size(${v.lanes})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(subgroup_invocation_id) lane: u32) {
  let k4 = dims.K / 4u;
  let m4 = dims.M / 4u;
  let n4 = dims.N / 4u;
  let r0 = dims.mOffset + wid.y * ${v.rows}u;
  let c0 = dims.nOffset + wid.x * ${lanesTileWidth(v)}u + lane * 4u;
${indent([...a.setup, ...b.setup, ...accs], 2)}
  for (var k = 0u; k < dims.K; k += 4u) {
${indent([...a.step, ...b.step, ...multiplyAdd(v)], 4)}
  }
${indent(store(v), 2)}
}
`;
}
