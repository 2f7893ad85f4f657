/**
 * WGSL of flash attention (flash-attention.ts): causal attention over packed q,k,v (B, T, 3C) without a
 * (T, T) score matrix. A workgroup owns BO consecutive rows of one (b, h), one row per thread, held in
 * registers; it walks the other side's rows in tiles of BI, which its threads load together into workgroup
 * memory, so each k, v (or q, dout) row is read from storage once per workgroup instead of once per thread.
 * Tiles wholly above the causal diagonal are never loaded. Rows past T repeat row T-1 so every thread reaches
 * every barrier, and store nothing. Every sum runs in one fixed order: results are the same bits each run.
 * With `f16` the operands (q, k, v, dout rows and tiles) are held as f16, halving workgroup memory and
 * registers, and converted to f32 for every product: the arithmetic and all sums stay f32, as on tensor cores.
 */
import { declare } from './op.js';

/** Rows a workgroup owns, one per thread. */
export const FLASH_ROWS = 64;

const DIMS = ['B', 'T', 'C', 'NH'];

export interface FlashShape {
  /** Head size. */
  hs: number;
  /** Elements per load: 4 when hs % 4 == 0. */
  vec: 1 | 4;
  /** Rows of the other side per workgroup-memory tile. */
  tile: number;
  /** Operands as f16 (needs the device's `shader-f16`); accumulation stays f32. */
  f16: boolean;
}

/**
 * Bytes of workgroup memory the largest of the three shaders (key side of backward) needs for `tile`, with
 * operands of `operandBytes` (4 for f32, 2 for f16).
 */
export function flashTileBytes(hs: number, tile: number, operandBytes = 4): number {
  return 2 * tile * hs * operandBytes + 2 * tile * 4;
}

/** The largest power-of-two tile from 4 to 64 whose workgroup memory fits `limit` bytes. */
export function flashTile(hs: number, limit: number, operandBytes = 4): number {
  let tile = 64;
  while (tile > 4 && flashTileBytes(hs, tile, operandBytes) > limit) tile /= 2;
  if (flashTileBytes(hs, tile, operandBytes) > limit)
    throw new Error(
      `flash attention: head size ${hs} needs more than the ${limit} bytes of workgroup memory`,
    );
  return tile;
}

/**
 * Common prologue: `t` is the thread's own row (clamped to T-1), `live` whether it is a real one, `bh` the
 * (b, h) pair, `rb` the first row of batch b, `hv` the head's offset in vector units.
 */
function prologue(storage: string[], shared: string, { hs, vec, tile, f16 }: FlashShape): string {
  const V = vec === 4 ? 'vec4f' : 'f32';
  const H = f16 ? (vec === 4 ? 'vec4<f16>' : 'f16') : V;
  return `${f16 ? 'enable f16;\n' : ''}${declare(storage, DIMS)}
alias V = ${V};
alias H = ${H};
const N = ${hs / vec}u;
const BI = ${tile}u;
const BO = ${FLASH_ROWS}u;
fn hsum(x: V) -> f32 { return ${vec === 4 ? 'x.x + x.y + x.z + x.w' : 'x'}; }
${shared}
@compute @workgroup_size(${FLASH_ROWS})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_id) lid: vec3u) {
  let bh = wid.y;
  let b = bh / p.NH;
  let hv = (bh % p.NH) * N;
  let rb = b * p.T;
  let Cv = p.C / ${vec}u;
  let C3v = 3u * Cv;
  let scale = inverseSqrt(f32(${hs}u));
  let o0 = wid.x * BO;
  let live = o0 + lid.x < p.T;
  let t = min(o0 + lid.x, p.T - 1u);`;
}

/** Loads rows i0..i0+BI-1 (clamped to T-1) of two packed sections into `a` and `b` (workgroup memory). */
function loadTile(a: string, aSrc: string, b: string, bSrc: string): string {
  return `    workgroupBarrier();
    for (var e = lid.x; e < BI * N; e += BO) {
      let r = rb + min(i0 + e / N, p.T - 1u);
      ${a}[e] = H(${aSrc});
      ${b}[e] = H(${bSrc});
    }`;
}

const KV_TILE = `var<workgroup> kt: array<H, BI * N>;
var<workgroup> vt: array<H, BI * N>;`;

const LOAD_KV = loadTile('kt', 'qkv[r * C3v + Cv + hv + e % N]', 'vt', 'qkv[r * C3v + 2u * Cv + hv + e % N]');

/** Loads the thread's own row of a packed tensor into a register array. */
function ownRow(name: string, src: string, base: string): string {
  return `  var ${name}: array<H, N>;
  for (var c = 0u; c < N; c++) { ${name}[c] = H(${src}[${base} + c]); }`;
}

/**
 * Forward: online softmax over key tiles 0..the query block's last row. Per tile the scores go to registers,
 * the running max m moves to the tile's, and the running sum l and output o are rescaled once per tile.
 * Writes out (B, T, C) and lse (B, NH, T) = m + log(l), the row statistics backward recomputes from.
 */
export function flashForwardShader(shape: FlashShape): string {
  return `${prologue(['out: V', 'lse', 'qkv: V'], KV_TILE, shape)}
${ownRow('q', 'qkv', '(rb + t) * C3v + hv')}
  var m = -3.0e38;
  var l = 0.0;
  var o: array<V, N>;
  let last = min(o0 + BO, p.T) - 1u;
  for (var i0 = 0u; i0 <= last; i0 += BI) {
${LOAD_KV}
    workgroupBarrier();
    var s: array<f32, BI>;
    var mt = m;
    for (var j = 0u; j < BI; j++) {
      var acc = V(0.0);
      for (var c = 0u; c < N; c++) { acc += V(q[c]) * V(kt[j * N + c]); }
      let sc = select(hsum(acc) * scale, -3.0e38, i0 + j > t);
      s[j] = sc;
      mt = max(mt, sc);
    }
    let corr = exp(m - mt);
    l *= corr;
    for (var c = 0u; c < N; c++) { o[c] *= corr; }
    for (var j = 0u; j < BI; j++) {
      let pj = exp(s[j] - mt);
      l += pj;
      for (var c = 0u; c < N; c++) { o[c] += pj * V(vt[j * N + c]); }
    }
    m = mt;
  }
  if (live) {
    let inv = 1.0 / l;
    let ob = (rb + t) * Cv + hv;
    for (var c = 0u; c < N; c++) { out[ob + c] = o[c] * inv; }
    lse[bh * p.T + t] = m + log(l);
  }
}`;
}

/**
 * Backward, query side (runs first): D = rowsum(dout * out), then over the key tiles up to the diagonal
 * p = exp(score - lse), ds = p (dout . v - D), dq += ds k. Adds dq into dqkv and stores D for the key side.
 */
export function flashQueryBackwardShader(shape: FlashShape): string {
  return `${prologue(['dqkv: V', 'delta', 'qkv: V', 'out: V', 'dout: V', 'lse'], KV_TILE, shape)}
${ownRow('q', 'qkv', '(rb + t) * C3v + hv')}
${ownRow('g', 'dout', '(rb + t) * Cv + hv')}
  var dsum = V(0.0);
  for (var c = 0u; c < N; c++) { dsum += V(g[c]) * out[(rb + t) * Cv + hv + c]; }
  let D = hsum(dsum);
  let L = lse[bh * p.T + t];
  var dq: array<V, N>;
  let last = min(o0 + BO, p.T) - 1u;
  for (var i0 = 0u; i0 <= last; i0 += BI) {
${LOAD_KV}
    workgroupBarrier();
    for (var j = 0u; j < BI; j++) {
      var acc = V(0.0);
      var dp = V(0.0);
      for (var c = 0u; c < N; c++) {
        acc += V(q[c]) * V(kt[j * N + c]);
        dp += V(g[c]) * V(vt[j * N + c]);
      }
      let pj = select(exp(min(hsum(acc) * scale - L, 0.0)), 0.0, i0 + j > t);
      let ds = pj * (hsum(dp) - D);
      for (var c = 0u; c < N; c++) { dq[c] += ds * V(kt[j * N + c]); }
    }
  }
  if (live) {
    let x = (rb + t) * C3v + hv;
    for (var c = 0u; c < N; c++) { dqkv[x + c] += dq[c] * scale; }
    delta[bh * p.T + t] = D;
  }
}`;
}

/**
 * Backward, key side: the thread owns key row t and walks the query tiles from the one holding row t's block
 * start to T, gathering dv += p dout and dk += ds q in query order (a fixed order: no atomics needed).
 */
export function flashKeyBackwardShader(shape: FlashShape): string {
  const shared = `var<workgroup> qt: array<H, BI * N>;
var<workgroup> gt: array<H, BI * N>;
var<workgroup> lt: array<f32, BI>;
var<workgroup> dt: array<f32, BI>;`;
  return `${prologue(['dqkv: V', 'qkv: V', 'dout: V', 'lse', 'delta'], shared, shape)}
${ownRow('k', 'qkv', '(rb + t) * C3v + Cv + hv')}
${ownRow('v', 'qkv', '(rb + t) * C3v + 2u * Cv + hv')}
  var dk: array<V, N>;
  var dv: array<V, N>;
  for (var i0 = (o0 / BI) * BI; i0 < p.T; i0 += BI) {
${loadTile('qt', 'qkv[r * C3v + hv + e % N]', 'gt', 'dout[r * Cv + hv + e % N]')}
    for (var e = lid.x; e < BI; e += BO) {
      let r = bh * p.T + min(i0 + e, p.T - 1u);
      lt[e] = lse[r];
      dt[e] = delta[r];
    }
    workgroupBarrier();
    for (var j = 0u; j < BI; j++) {
      var acc = V(0.0);
      var dp = V(0.0);
      for (var c = 0u; c < N; c++) {
        acc += V(qt[j * N + c]) * V(k[c]);
        dp += V(gt[j * N + c]) * V(v[c]);
      }
      let i = i0 + j;
      let pj = select(exp(min(hsum(acc) * scale - lt[j], 0.0)), 0.0, i < t || i >= p.T);
      let ds = pj * (hsum(dp) - dt[j]);
      for (var c = 0u; c < N; c++) {
        dv[c] += pj * V(gt[j * N + c]);
        dk[c] += ds * V(qt[j * N + c]);
      }
    }
  }
  if (live) {
    let x = (rb + t) * C3v + hv;
    for (var c = 0u; c < N; c++) {
      dqkv[x + Cv + c] += dk[c] * scale;
      dqkv[x + 2u * Cv + c] += dv[c];
    }
  }
}`;
}
