/**
 * The matmul speed ladder of gpu/README.md ("Optimisations"): each rung of out = inp · weight^T at n x n,
 * timed on the same device in interleaved rounds (the best round counts, since other work shares the CPU
 * that lavapipe runs on). Run: node --import tsx scripts/bench/matmul-ladder.ts [n] [rounds] [rung,...]
 */
import { type TileShape, matmulShader } from '../../gpu/kernels/matmul-wgsl.js';
import { MATMUL_TILE } from '../../gpu/kernels/matmul.js';
import type { EncodedOp } from '../../gpu/kernels/types.js';
import { testDevice } from '../../test/helpers/gpu.js';
import { drainQueue } from './gpu-sync.js';
import { rateOp } from './matmul.js';

const naive = /* wgsl */ `
struct Dims { M: u32, N: u32, K: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
@compute @workgroup_size(8, 8)
fn main(@builtin(global_invocation_id) gid: vec3u) {
  let row = gid.y;
  let col = gid.x;
  if (row >= dims.M || col >= dims.N) { return; }
  var sum = 0.0;
  for (var k = 0u; k < dims.K; k++) { sum += a[row * dims.K + k] * b[col * dims.K + k]; }
  c[row * dims.N + col] = sum;
}`;

const workgroupTiles = /* wgsl */ `
struct Dims { M: u32, N: u32, K: u32 }
@group(0) @binding(0) var<uniform> dims: Dims;
@group(0) @binding(1) var<storage, read> a: array<f32>;
@group(0) @binding(2) var<storage, read> b: array<f32>;
@group(0) @binding(3) var<storage, read_write> c: array<f32>;
var<workgroup> As: array<array<f32, 16>, 16>;
var<workgroup> Bs: array<array<f32, 16>, 16>;
@compute @workgroup_size(16, 16)
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let row = wid.y * 16u + lid.y;
  let col = wid.x * 16u + lid.x;
  var sum = 0.0;
  for (var k0 = 0u; k0 < dims.K; k0 += 16u) {
    let ka = k0 + lid.x;
    As[lid.y][lid.x] = select(0.0, a[row * dims.K + ka], row < dims.M && ka < dims.K);
    let brow = wid.x * 16u + lid.y;
    Bs[lid.y][lid.x] = select(0.0, b[brow * dims.K + ka], brow < dims.N && ka < dims.K);
    workgroupBarrier();
    for (var k = 0u; k < 16u; k++) { sum += As[lid.y][k] * Bs[lid.x][k]; }
    workgroupBarrier();
  }
  if (row < dims.M && col < dims.N) { c[row * dims.N + col] = sum; }
}`;

interface Rung {
  name: string;
  code: string;
  /** Output rows and columns one workgroup covers. */
  bm: number;
  bn: number;
}

function generated(name: string, tile: TileShape, vec4: boolean): Rung {
  const code = matmulShader({
    a: 'mk',
    b: 'nk',
    bias: false,
    accumulate: false,
    vec4,
    inputsWritable: false,
    epilogue: 'none',
    tile,
  });
  return { name, code, bm: tile.bm, bn: tile.bn };
}

const rungs: Rung[] = [
  { name: 'naive', code: naive, bm: 8, bn: 8 },
  { name: 'workgroup tiles 16x16', code: workgroupTiles, bm: 16, bn: 16 },
  generated('register tiles 4x4, scalar loads', { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 }, false),
  generated('register tiles 4x4, vec4 loads', { bm: 64, bn: 64, bk: 16, tm: 4, tn: 4 }, true),
  generated('register tiles 8x8, vec4, 64x64 tile, bk 8', { bm: 64, bn: 64, bk: 8, tm: 8, tn: 8 }, true),
  generated('register tiles 8x16, vec4, 64x128 tile, bk 8 (chosen)', MATMUL_TILE, true),
  generated('register tiles 8x16, vec4, 64x128 tile, bk 16', { ...MATMUL_TILE, bk: 16 }, true),
  generated(
    'register tiles 16x16, vec4, 128x128 tile, bk 8',
    { bm: 128, bn: 128, bk: 8, tm: 16, tn: 16 },
    true,
  ),
];

function build(device: GPUDevice, rung: Rung, n: number, bufs: GPUBuffer[]): EncodedOp {
  const pipeline = device.createComputePipeline({
    layout: 'auto',
    compute: { module: device.createShaderModule({ code: rung.code }), entryPoint: 'main' },
  });
  const dims = device.createBuffer({ size: 32, usage: GPUBufferUsage.UNIFORM | GPUBufferUsage.COPY_DST });
  device.queue.writeBuffer(dims, 0, new Uint32Array([n, n, n, 0, 0, 0, 0, 0]));
  const bindGroup = device.createBindGroup({
    layout: pipeline.getBindGroupLayout(0),
    entries: [
      { binding: 0, resource: { buffer: dims } },
      ...bufs.map((buffer, i) => ({ binding: i + 1, resource: { buffer } })),
    ],
  });
  return {
    label: rung.name,
    encode(pass) {
      pass.setPipeline(pipeline);
      pass.setBindGroup(0, bindGroup);
      pass.dispatchWorkgroups(Math.ceil(n / rung.bn), Math.ceil(n / rung.bm));
    },
  };
}

async function main(): Promise<void> {
  const n = Number(process.argv[2] ?? 1024);
  const rounds = Number(process.argv[3] ?? 3);
  const pick = process.argv[4]?.split(',').map(Number);
  const chosen = pick ? rungs.filter((_, i) => pick.includes(i)) : rungs;
  const { device } = await testDevice();
  const bufs = [0, 1, 2].map(() => {
    const buffer = device.createBuffer({
      size: n * n * 4,
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    device.queue.writeBuffer(
      buffer,
      0,
      new Float32Array(n * n).map(() => Math.random() * 2 - 1),
    );
    return buffer;
  });
  const ops = chosen.map((r) => build(device, r, n, bufs));
  // Warm-up: the first launch of a pipeline also pays for its compilation.
  for (const op of ops) await rateOp(device, op, 0, 1);
  await drainQueue(device);
  const best = chosen.map(() => 0);
  const bestCpu = chosen.map(() => 0);
  for (let round = 0; round < rounds; round++) {
    for (const [i, op] of ops.entries()) {
      const { gflops, gflopsPerCpuSecond } = await rateOp(device, op, 2 * n ** 3, 1);
      best[i] = Math.max(best[i]!, gflops);
      bestCpu[i] = Math.max(bestCpu[i]!, gflopsPerCpuSecond);
    }
  }
  // CPU time counts lavapipe's worker threads too; GFLOP per CPU-second hardly moves when others load the machine.
  console.log(`n=${n}, best of ${rounds} rounds: GFLOP/s (wall), GFLOP per CPU-second:`);
  chosen.forEach((r, i) =>
    console.log(`  ${best[i]!.toFixed(2).padStart(7)} ${bestCpu[i]!.toFixed(2).padStart(7)}  ${r.name}`),
  );
  device.destroy();
  process.exit(0);
}

await main();
