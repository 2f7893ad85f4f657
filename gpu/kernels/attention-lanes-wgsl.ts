/**
 * The attention shaders of attention.ts rewritten for adapters that run a subgroup as a CPU's SIMD lanes (see
 * lanes.ts). A workgroup is one subgroup of S consecutive positions of one (b, h), so every lane walks the same
 * other rows: each row of q, k, v or dout is loaded once per subgroup (lane l takes vec4 chunks l, l + S, ...)
 * and handed to all lanes by subgroupBroadcast, instead of every lane loading all of it. The loops run to the
 * subgroup's last position, so control flow stays uniform, and a lane adds exact zeros past its own causal
 * bound; the sums keep the order of attention.ts, so both give the same results.
 * Needs hs % 4 == 0 and T % S == 0; bindings and uniforms are those of attention.ts.
 */
import { declare } from './op.js';

const DIMS = ['B', 'T', 'C', 'NH'];

/**
 * Forward softmax, middle pass, shared by both forward shaders: att[row + 0..t] holds the thread's scores and
 * maxv their maximum; leaves exp(score - maxv) there, and inv = 1 / their sum.
 */
export const EXPONENTIATE_ROW = `  var sum = 0.0;
  for (var t2 = 0u; t2 <= t; t2++) {
    let e = exp(att[row + t2] - maxv);
    att[row + t2] = e;
    sum += e;
  }
  let inv = 1.0 / sum;`;

export interface AttentionLanesShape {
  /** Head size. */
  hs: number;
  /** Subgroup size. */
  lanes: number;
}

export function attentionLanesFit(hs: number, T: number, lanes: number): boolean {
  return hs % 4 === 0 && T % lanes === 0;
}

function header(storage: string[], { hs, lanes }: AttentionLanesShape): string {
  return `enable subgroups;
${declare(storage, DIMS)}
const N = ${hs / 4}u;
const S = ${lanes}u;
fn hsum(x: vec4f) -> f32 { return x.x + x.y + x.z + x.w; }

@compute @workgroup_size(${lanes})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(num_workgroups) nwg: vec3u,
        @builtin(subgroup_invocation_id) lane: u32) {
  let first = (wid.y * nwg.x + wid.x) * S;
  if (first >= p.B * p.NH * p.T) { return; }
  let t0 = first % p.T;
  let h = (first / p.T) % p.NH;
  let b = first / (p.T * p.NH);
  let t = t0 + lane;
  let row = (first + lane) * p.T;
  let tEnd = t0 + S;
  let Cv = p.C / 4u;
  let C3v = 3u * Cv;
  let hv = h * N;
  let scale = inverseSqrt(f32(N * 4u));`;
}

/** Statements loading the N vec4 chunks of `src` at `base` spread over the lanes, as `name0`, `name1`, ... */
function loadRow(name: string, src: string, base: string, { hs, lanes }: AttentionLanesShape): string {
  const n = hs / 4;
  const regs = Math.ceil(n / lanes);
  return Array.from(
    { length: regs },
    (_, r) => `let ${name}${r} = ${src}[${base} + min(${r * lanes}u + lane, N - 1u)];`,
  ).join('\n    ');
}

/** WGSL for chunk j of a row loaded by {@link loadRow}, as seen by every lane. */
function chunk(name: string, j: number, lanes: number): string {
  return `subgroupBroadcast(${name}${Math.floor(j / lanes)}, ${j % lanes}u)`;
}

/** `target[j] op= factor * chunk j` for every j, unrolled. */
function axpy(target: string, factor: string, name: string, s: AttentionLanesShape): string {
  return Array.from(
    { length: s.hs / 4 },
    (_, j) => `${target}[${j}] += ${factor} * ${chunk(name, j, s.lanes)};`,
  ).join('\n    ');
}

/** `var acc = sum over j of own[j] * chunk j`, in j order. */
function dot(own: string, name: string, s: AttentionLanesShape): string {
  const terms = Array.from(
    { length: s.hs / 4 },
    (_, j) => `acc += ${own}[${j}] * ${chunk(name, j, s.lanes)};`,
  );
  return ['var acc = vec4f(0.0);', ...terms].join('\n    ');
}

export function forwardLanesShader(s: AttentionLanesShape): string {
  return `${header(['out: vec4f', 'att', 'qkv: vec4f'], s)}
  var q: array<vec4f, N>;
  let qb = (b * p.T + t) * C3v + hv;
  for (var j = 0u; j < N; j++) { q[j] = qkv[qb + j]; }
  var maxv = -3.0e38;
  for (var t2 = 0u; t2 < tEnd; t2++) {
    ${loadRow('k', 'qkv', '(b * p.T + t2) * C3v + Cv + hv', s)}
    ${dot('q', 'k', s)}
    let sc = hsum(acc) * scale;
    if (t2 <= t) {
      att[row + t2] = sc;
      maxv = max(maxv, sc);
    }
  }
${EXPONENTIATE_ROW}
  var o: array<vec4f, N>;
  for (var t2 = 0u; t2 < tEnd; t2++) {
    ${loadRow('v', 'qkv', '(b * p.T + t2) * C3v + 2u * Cv + hv', s)}
    let a = select(0.0, att[row + t2] * inv, t2 <= t);
    if (t2 <= t) { att[row + t2] = a; }
    ${axpy('o', 'a', 'v', s)}
  }
  for (var t2 = t + 1u; t2 < p.T; t2++) { att[row + t2] = 0.0; }
  let ob = (b * p.T + t) * Cv + hv;
  for (var j = 0u; j < N; j++) { out[ob + j] = o[j]; }
}`;
}

export function queryBackwardLanesShader(s: AttentionLanesShape): string {
  return `${header(['dqkv: vec4f', 'dpreatt', 'att', 'qkv: vec4f', 'dout: vec4f'], s)}
  var g: array<vec4f, N>;
  let ob = (b * p.T + t) * Cv + hv;
  for (var j = 0u; j < N; j++) { g[j] = dout[ob + j]; }
  var sacc = 0.0;
  for (var t2 = 0u; t2 < tEnd; t2++) {
    ${loadRow('v', 'qkv', '(b * p.T + t2) * C3v + 2u * Cv + hv', s)}
    ${dot('g', 'v', s)}
    let datt = hsum(acc);
    if (t2 <= t) {
      dpreatt[row + t2] = datt;
      sacc += att[row + t2] * datt;
    }
  }
  var dq: array<vec4f, N>;
  for (var t2 = 0u; t2 < tEnd; t2++) {
    ${loadRow('k', 'qkv', '(b * p.T + t2) * C3v + Cv + hv', s)}
    let d = select(0.0, att[row + t2] * (dpreatt[row + t2] - sacc), t2 <= t);
    if (t2 <= t) { dpreatt[row + t2] = d; }
    ${axpy('dq', 'd', 'k', s)}
  }
  for (var t2 = t + 1u; t2 < p.T; t2++) { dpreatt[row + t2] = 0.0; }
  let x = (b * p.T + t) * C3v + hv;
  for (var j = 0u; j < N; j++) { dqkv[x + j] += dq[j] * scale; }
}`;
}

export function keyBackwardLanesShader(s: AttentionLanesShape): string {
  return `${header(['dqkv: vec4f', 'dpreatt', 'att', 'qkv: vec4f', 'dout: vec4f'], s)}
  let head0 = (b * p.NH + h) * p.T * p.T;
  var dk: array<vec4f, N>;
  var dv: array<vec4f, N>;
  for (var t3 = t0; t3 < p.T; t3++) {
    ${loadRow('q', 'qkv', '(b * p.T + t3) * C3v + hv', s)}
    ${loadRow('g', 'dout', '(b * p.T + t3) * Cv + hv', s)}
    let cell = head0 + t3 * p.T + t;
    let d = select(0.0, dpreatt[cell], t3 >= t);
    let a = select(0.0, att[cell], t3 >= t);
    ${axpy('dk', 'd', 'q', s)}
    ${axpy('dv', 'a', 'g', s)}
  }
  let x = (b * p.T + t) * C3v + hv;
  for (var j = 0u; j < N; j++) {
    dqkv[x + Cv + j] += dk[j] * scale;
    dqkv[x + 2u * Cv + j] += dv[j];
  }
}`;
}
