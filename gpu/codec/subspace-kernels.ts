import type { SubspaceBasis } from '../../shared/protocol/codec-subspace.js';
import { PipelineCache, Uniforms, declare, flatMain, grid, launch, need } from '../kernels/op.js';
import type { EncodedOp, TensorRef } from '../kernels/types.js';
import { MAX_SUBSPACE_RANK } from './basis.js';
import type { ProjectionTarget } from './projection.js';

const WG = 64;

/*
 * Projection: one thread per vector (a row of an embedding, a column of an output projection), strided so
 * one shader serves both. It runs once per optimizer step over a few matrices, so a thread-per-vector loop
 * with the k coefficients in registers is enough; the rank is capped so they fit.
 */
const projectWgsl =
  () => /* wgsl */ `${declare(['m', 'basis', 'fixed'], ['vectors', 'width', 'rank', 'vecStride', 'elemStride', 'withFixed'])}
${flatMain(WG)}
  if (i >= p.vectors) { return; }
  var c: array<f32, ${MAX_SUBSPACE_RANK}>;
  for (var j = 0u; j < p.rank; j++) { c[j] = 0.0; }
  for (var e = 0u; e < p.width; e++) {
    let at = i * p.vecStride + e * p.elemStride;
    var x = m[at];
    if (p.withFixed != 0u) { x -= fixed[at]; }
    for (var j = 0u; j < p.rank; j++) { c[j] += x * basis[e * p.rank + j]; }
  }
  for (var e = 0u; e < p.width; e++) {
    let at = i * p.vecStride + e * p.elemStride;
    var acc = 0.0;
    if (p.withFixed != 0u) { acc = fixed[at]; }
    for (var j = 0u; j < p.rank; j++) { acc += basis[e * p.rank + j] * c[j]; }
    m[at] = acc;
  }
}`;

/**
 * Encode and decode share their bindings: output, input, the basis, the fixed parts and the token ids. The
 * fixed part of row r is that of its token and of its position r % seq.
 */
const boundaryWgsl = (io: [string, string], threads: string, body: string) => () => /* wgsl */ `${declare(
  [...io, 'basis', 'fixedToken', 'fixedPos', 'tokens: i32'],
  ['rows', 'width', 'rank', 'seq', 'withFixed'],
)}
fn fixedAt(r: u32, e: u32) -> f32 {
  if (p.withFixed == 0u) { return 0.0; }
  return fixedToken[u32(tokens[r]) * p.width + e] + fixedPos[(r % p.seq) * p.width + e];
}
${flatMain(WG)}
  if (i >= p.rows * ${threads}) { return; }
${body}
}`;

/* Encode: one thread per (token, coefficient): c = U^T (x - fixed). */
const encodeWgsl = boundaryWgsl(
  ['coeffs', 'x'],
  'p.rank',
  `
  let r = i / p.rank;
  let j = i % p.rank;
  var acc = 0.0;
  for (var e = 0u; e < p.width; e++) { acc += (x[r * p.width + e] - fixedAt(r, e)) * basis[e * p.rank + j]; }
  coeffs[i] = acc;`,
);

/* Decode: one thread per (token, element): x = U c + fixed. */
const decodeWgsl = boundaryWgsl(
  ['x', 'coeffs'],
  'p.width',
  `
  let r = i / p.width;
  let e = i % p.width;
  var acc = fixedAt(r, e);
  for (var j = 0u; j < p.rank; j++) { acc += basis[e * p.rank + j] * coeffs[r * p.rank + j]; }
  x[i] = acc;`,
);

export interface BoundaryRows {
  rows: number;
  seq: number;
  /** Token id of each row (i32): forward only, where the fixed embedding parts are taken off or put back. */
  tokens: TensorRef | null;
}

/**
 * The subspace codec on the GPU: the weight projection that keeps a stage in span(U), and the boundary
 * encode/decode, with the numbers of the CPU reference (shared/protocol/codec-subspace.ts,
 * gpu/codec/projection.ts). The basis and the fixed embedding parts are uploaded once.
 */
export class SubspaceKernels {
  private readonly pipelines: PipelineCache;
  private readonly basis: TensorRef;
  private readonly fixedToken: TensorRef;
  private readonly fixedPos: TensorRef;
  /** Bound where a shader variant reads nothing: a binding must never alias another, writable one. */
  private readonly unused: TensorRef;
  private readonly buffers: GPUBuffer[] = [];

  constructor(
    private readonly device: GPUDevice,
    private readonly b: SubspaceBasis,
  ) {
    this.pipelines = new PipelineCache(device);
    this.basis = this.upload('subspace basis', b.basis);
    this.fixedToken = this.upload('subspace fixed token part', b.fixedToken);
    this.fixedPos = this.upload('subspace fixed position part', b.fixedPos);
    this.unused = this.upload('subspace unused binding', new Float32Array(4));
  }

  /** Keeps `param` (a stage parameter, as `target` describes it) in span(U). */
  project(param: TensorRef, target: ProjectionTarget, shape: readonly number[]): EncodedOp {
    const C = this.b.width;
    const n = shape.reduce((a, x) => a * x, 1);
    need(param, n, target.name);
    const rows = target.kind === 'rows';
    const vectors = n / C;
    const fixed =
      target.fixed === 'token' ? this.fixedToken : target.fixed === 'position' ? this.fixedPos : this.unused;
    if (target.fixed !== null) need(fixed, n, `${target.name} fixed part`);
    return launch(
      this.device,
      this.pipelines.get('subspace project', projectWgsl),
      `project ${target.name}`,
      [param, this.basis, fixed],
      new Uniforms()
        .u32(vectors)
        .u32(C)
        .u32(this.b.rank)
        .u32(rows ? C : 1)
        .u32(rows ? 1 : vectors)
        .u32(target.fixed !== null ? 1 : 0),
      grid(vectors, WG),
    );
  }

  /** coeffs (rows x rank) = U^T (x - fixed parts); the fixed parts only when `tokens` is given. */
  encode(a: BoundaryRows & { coeffs: TensorRef; x: TensorRef }): EncodedOp {
    return this.boundary('encode', encodeWgsl, [a.coeffs, a.x], a, a.rows * this.b.rank);
  }

  /** x (rows x width) = U coeffs (+ fixed parts when `tokens` is given). */
  decode(a: BoundaryRows & { x: TensorRef; coeffs: TensorRef }): EncodedOp {
    return this.boundary('decode', decodeWgsl, [a.x, a.coeffs], a, a.rows * this.b.width);
  }

  destroy(): void {
    for (const buffer of this.buffers) buffer.destroy();
  }

  private boundary(
    kind: string,
    code: () => string,
    io: [TensorRef, TensorRef],
    a: BoundaryRows,
    threads: number,
  ): EncodedOp {
    const { width: C, rank: K } = this.b;
    const [out, inp] = io;
    need(kind === 'encode' ? out : inp, a.rows * K, `${kind} coefficients`);
    need(kind === 'encode' ? inp : out, a.rows * C, `${kind} activations`);
    if (a.tokens) need(a.tokens, a.rows, `${kind} token ids`);
    return launch(
      this.device,
      this.pipelines.get(`subspace ${kind}`, code),
      `subspace ${kind}`,
      [out, inp, this.basis, this.fixedToken, this.fixedPos, a.tokens ?? this.unused],
      new Uniforms()
        .u32(a.rows)
        .u32(C)
        .u32(K)
        .u32(a.seq)
        .u32(a.tokens ? 1 : 0),
      grid(threads, WG),
    );
  }

  private upload(label: string, data: Float32Array): TensorRef {
    const buffer = this.device.createBuffer({
      label,
      size: Math.max(16, data.byteLength),
      usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
    });
    this.device.queue.writeBuffer(buffer, 0, data.buffer, data.byteOffset, data.byteLength);
    this.buffers.push(buffer);
    return { buffer, offset: 0, size: buffer.size };
  }
}
