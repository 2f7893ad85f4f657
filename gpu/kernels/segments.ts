/**
 * Many tensors in one launch. A launch binds, per role (param, grad, ...), one byte range spanning that role's
 * tensors, and a segment table: its first `groups` u32 map each workgroup to its tensor, then each tensor has
 * `fields` u32 of its own (where it starts within the spans, its length, ...). One launch instead of one per
 * tensor matters on CPU adapters, where every dispatch has a fixed cost of a fraction of a millisecond.
 */
import type { TensorRef } from './types.js';

/** A byte range of one buffer, as a binding takes it. */
export interface Span {
  buffer: GPUBuffer;
  offset: number;
  size: number;
}

function overlap(a: Span, b: Span): boolean {
  return a.buffer === b.buffer && a.offset < b.offset + b.size && b.offset < a.offset + a.size;
}

/** Describes the items being segmented: their tensors by role, and their lengths in floats. */
export interface SegmentSource<T> {
  refs(item: T): readonly TensorRef[];
  floats(item: T): number;
}

/** Per role, the range from the run's first tensor to the end of its last. */
export function spans<T>(run: readonly T[], src: SegmentSource<T>): Span[] {
  const head = src.refs(run[0]!);
  const last = run[run.length - 1]!;
  const tail = src.refs(last);
  return head.map((h, r) => ({
    buffer: h.buffer,
    offset: h.offset,
    size: tail[r]!.offset + 4 * src.floats(last) - h.offset,
  }));
}

/**
 * Whether one launch can bind `run`: each role's tensors in one buffer in increasing order, each span within
 * `maxBinding` bytes, and no span overlapping another or any of `others` (bindings the launch also writes:
 * WebGPU refuses aliased writable bindings).
 */
export function bindable<T>(
  run: readonly T[],
  src: SegmentSource<T>,
  maxBinding: number,
  others: readonly Span[] = [],
): boolean {
  const head = src.refs(run[0]!);
  for (const item of run) {
    if (!src.refs(item).every((ref, r) => ref.buffer === head[r]!.buffer && ref.offset >= head[r]!.offset))
      return false;
  }
  const s = spans(run, src);
  return s.every(
    (a, i) =>
      a.size <= maxBinding &&
      s.every((b, j) => j <= i || !overlap(a, b)) &&
      others.every((o) => !overlap(a, o)),
  );
}

/** Splits items into consecutive runs that one launch each can bind; an item that cannot be bound alone throws. */
export function bindableRuns<T>(
  items: readonly T[],
  src: SegmentSource<T>,
  maxBinding: number,
  others: readonly Span[] = [],
): T[][] {
  const out: T[][] = [];
  let run: T[] = [];
  for (const item of items) {
    if (!bindable([item], src, maxBinding, others)) {
      throw new Error('a tensor overlaps another binding of its launch, or exceeds the binding limit');
    }
    if (run.length > 0 && !bindable([...run, item], src, maxBinding, others)) {
      out.push(run);
      run = [];
    }
    run.push(item);
  }
  if (run.length > 0) out.push(run);
  return out;
}

/**
 * The segment table of a run: `groupCounts[i]` workgroups for item i, then `fields` u32 per item from
 * `describe(i, firstGroup)`.
 */
export function segmentTable(
  groupCounts: readonly number[],
  fields: number,
  describe: (i: number, firstGroup: number) => readonly number[],
): { table: Uint32Array<ArrayBuffer>; groups: number } {
  const groups = groupCounts.reduce((a, b) => a + b, 0);
  const table = new Uint32Array(groups + fields * groupCounts.length);
  let first = 0;
  groupCounts.forEach((count, i) => {
    table.fill(i, first, first + count);
    table.set(describe(i, first), groups + fields * i);
    first += count;
  });
  return { table, groups };
}

/** The table in a storage buffer, written once when the launch is built. */
export function tableBuffer(device: GPUDevice, label: string, table: Uint32Array<ArrayBuffer>): Span {
  const buffer = device.createBuffer({
    label,
    size: table.byteLength,
    usage: GPUBufferUsage.STORAGE | GPUBufferUsage.COPY_DST,
  });
  device.queue.writeBuffer(buffer, 0, table);
  return { buffer, offset: 0, size: table.byteLength };
}

/** Bytes of a segment table for `groups` workgroups over `items` items. */
export function segmentTableBytes(groups: number, items: number, fields: number): number {
  return 4 * (groups + fields * items);
}
