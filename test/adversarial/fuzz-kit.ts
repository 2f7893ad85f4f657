import fc from 'fast-check';
import { z } from 'zod';
import { encodeFrame, type Tensor } from '../../shared/protocol/frame.js';

/**
 * Arbitraries for message fuzzing, derived from the protocol's zod schemas (through their JSON Schema, zod's
 * public view of them) so that a message type added to a union is fuzzed without touching the tests.
 */

type JsonSchema = {
  type?: string | string[];
  const?: unknown;
  enum?: unknown[];
  properties?: Record<string, JsonSchema>;
  required?: string[];
  items?: JsonSchema;
  minItems?: number;
  maxItems?: number;
  minimum?: number;
  maximum?: number;
  exclusiveMinimum?: number;
  exclusiveMaximum?: number;
  minLength?: number;
  maxLength?: number;
  pattern?: string;
  format?: string;
  anyOf?: JsonSchema[];
  oneOf?: JsonSchema[];
};

/** The message types of a discriminated union of `type`-tagged objects, read from its schemas. */
export function unionTypes(union: z.ZodDiscriminatedUnion): string[] {
  return union.options.map((option) => {
    const type = (option as z.ZodObject).shape.type as z.ZodLiteral<string>;
    return type.value;
  });
}

/** The option of `union` whose `type` is `type`. */
export function optionOf(union: z.ZodDiscriminatedUnion, type: string): z.ZodType {
  const option = union.options.find(
    (o) => ((o as z.ZodObject).shape.type as z.ZodLiteral<string>).value === type,
  );
  if (!option) throw new Error(`no ${type} in the union`);
  return option as z.ZodType;
}

const integers = (min: number, max: number): fc.Arbitrary<number> =>
  fc.oneof(
    { arbitrary: fc.integer({ min, max: Math.min(max, min + 8) }), weight: 3 },
    {
      arbitrary: fc
        .bigInt({
          min: BigInt(Math.max(min, Number.MIN_SAFE_INTEGER)),
          max: BigInt(Math.min(max, Number.MAX_SAFE_INTEGER)),
        })
        .map(Number),
      weight: 1,
    },
  );

function fromJsonSchema(schema: JsonSchema): fc.Arbitrary<unknown> {
  if ('const' in schema) return fc.constant(schema.const);
  if (schema.enum) return fc.constantFrom(...schema.enum);
  const alternatives = schema.anyOf ?? schema.oneOf;
  if (alternatives) return fc.oneof(...alternatives.map(fromJsonSchema));
  if (Array.isArray(schema.type))
    return fc.oneof(...schema.type.map((type) => fromJsonSchema({ ...schema, type })));
  switch (schema.type) {
    case 'null':
      return fc.constant(null);
    case 'boolean':
      return fc.boolean();
    case 'integer':
      return integers(schema.minimum ?? -(2 ** 31), schema.maximum ?? 2 ** 31);
    case 'number': {
      const min = schema.minimum ?? schema.exclusiveMinimum ?? -1e6;
      const max = schema.maximum ?? schema.exclusiveMaximum ?? 1e6;
      return fc
        .double({ min, max, noNaN: true, noDefaultInfinity: true })
        .filter((n) => n !== schema.exclusiveMinimum && n !== schema.exclusiveMaximum);
    }
    case 'string': {
      const minLength = schema.minLength ?? 0;
      const maxLength = Math.min(schema.maxLength ?? 40, 40);
      if (schema.format === 'date-time')
        return fc
          .integer({ min: Date.UTC(2000, 0, 1), max: Date.UTC(2100, 0, 1) })
          .map((t) => new Date(t).toISOString());
      if (schema.pattern) {
        const cap = schema.maxLength ?? Infinity;
        return fc
          .stringMatching(new RegExp(schema.pattern))
          .filter((s) => s.length >= minLength && s.length <= cap);
      }
      return fc.string({ minLength, maxLength: Math.max(minLength, maxLength) });
    }
    case 'array':
      return fc.array(fromJsonSchema(schema.items ?? {}), {
        minLength: schema.minItems ?? 0,
        maxLength: Math.min(schema.maxItems ?? 4, 4),
      });
    case 'object': {
      const properties = schema.properties ?? {};
      const required = schema.required ?? [];
      const record: Record<string, fc.Arbitrary<unknown>> = {};
      for (const [key, value] of Object.entries(properties)) record[key] = fromJsonSchema(value);
      return fc.record(record, { requiredKeys: required });
    }
    default:
      return fc.jsonValue({ maxDepth: 2 });
  }
}

/** Values shaped like `schema`'s (mostly valid; refinements JSON Schema cannot express may fail). */
export function arbitraryFrom(schema: z.ZodType): fc.Arbitrary<unknown> {
  return fromJsonSchema(z.toJSONSchema(schema, { unrepresentable: 'any', io: 'input' }) as JsonSchema);
}

/** Marks numbers JSON cannot carry; `toWireText` writes them as tokens a peer could send. */
const SPECIAL = '\u0000special:';
export const nonFinite = {
  infinity: `${SPECIAL}1e999`,
  minusInfinity: `${SPECIAL}-1e999`,
  nan: `${SPECIAL}NaN`,
  /** Parses as a number past 2^53: JSON.parse rounds it. */
  beyondSafe: `${SPECIAL}123456789012345678901234567890`,
};

/** JSON text, with the markers of `nonFinite` written as raw number tokens (`1e999` parses as Infinity). */
export function toWireText(value: unknown): string {
  return JSON.stringify(value).replace(/"\\u0000special:([^"]*)"/g, '$1');
}

/** Values of the wrong type or out of any sane range, for replacing one field of a message. */
export const hostileValue: fc.Arbitrary<unknown> = fc.oneof(
  fc.constantFrom<unknown>(
    null,
    true,
    '',
    'x',
    -1,
    -0,
    0.5,
    2 ** 31 + 1,
    2 ** 53 + 2,
    Number.MAX_VALUE,
    -Number.MAX_VALUE,
    Number.MIN_VALUE,
    [],
    {},
    { type: 'hello' },
    '0'.repeat(64),
    'z'.repeat(70_000),
    nonFinite.infinity,
    nonFinite.minusInfinity,
    nonFinite.nan,
    nonFinite.beyondSafe,
  ),
  fc.string({ maxLength: 16 }),
  fc.double(),
  fc.integer(),
  fc.array(fc.integer(), { minLength: 2000, maxLength: 3000 }),
  fc.jsonValue({ maxDepth: 3 }),
);

type Path = Array<string | number>;

function paths(value: unknown, prefix: Path = []): Path[] {
  if (value === null || typeof value !== 'object') return [prefix];
  const entries = Array.isArray(value) ? value.map((v, i) => [i, v] as const) : Object.entries(value);
  return [prefix, ...entries.flatMap(([k, v]) => paths(v, [...prefix, k]))];
}

function edit(
  value: unknown,
  path: Path,
  change: (parent: Record<string | number, unknown>, key: string | number) => void,
): unknown {
  const copy = structuredClone(value) as Record<string | number, unknown>;
  let parent = copy;
  for (const key of path.slice(0, -1)) parent = parent[key] as Record<string | number, unknown>;
  change(parent, path[path.length - 1]!);
  return copy;
}

/** One mutation of a message: a field replaced, removed or added, or the whole message replaced. */
export interface Mutation {
  pick: number;
  kind: 'replace' | 'remove' | 'add';
  value: unknown;
}

export const mutationArb: fc.Arbitrary<Mutation> = fc.record({
  pick: fc.nat(),
  kind: fc.constantFrom('replace', 'replace', 'replace', 'remove', 'add'),
  value: hostileValue,
});

export function mutate(message: unknown, { pick, kind, value }: Mutation): unknown {
  const all = paths(message);
  const path = all[pick % all.length]!;
  if (path.length === 0) return kind === 'add' ? value : message === null ? value : [message];
  if (kind === 'remove')
    return edit(message, path, (parent, key) => {
      if (Array.isArray(parent)) parent.splice(Number(key), 1);
      else delete parent[key];
    });
  if (kind === 'add')
    return edit(message, path, (parent) => {
      if (Array.isArray(parent)) parent.push(value);
      else parent.extra = value;
    });
  return edit(message, path, (parent, key) => (parent[key] = value));
}

/** Whether `text`, as a receiver parses it, is a message `schema` accepts. */
export function schemaAccepts(schema: z.ZodType, text: string): boolean {
  try {
    return schema.safeParse(JSON.parse(text)).success;
  } catch {
    return false;
  }
}

/** How a tensor frame is broken; each kind makes a frame the receiver must refuse. */
export type FrameFault =
  | 'drop'
  | 'extra'
  | 'miscount'
  | 'dtype'
  | 'shape'
  | 'rank'
  | 'truncate'
  | 'pad'
  | 'magic'
  | 'version'
  | 'codec'
  | 'message-id'
  | 'index'
  | 'text-instead'
  | 'oversize';

export const frameFaultArb: fc.Arbitrary<FrameFault> = fc.constantFrom(
  'drop',
  'extra',
  'miscount',
  'dtype',
  'shape',
  'rank',
  'truncate',
  'pad',
  'magic',
  'version',
  'codec',
  'message-id',
  'index',
  'text-instead',
  'oversize',
);

/** Faults that apply when a message carries no tensors. */
export const NO_TENSOR_FAULTS: FrameFault[] = ['extra', 'miscount'];

/**
 * The text and binary frames of `message` (carrying `tensors`, sent with id `id`) with `fault` applied to
 * tensor `which`; `oversizeBytes` is past the receiver's frame limit.
 */
export function faultyFrames(
  id: number,
  message: Record<string, unknown>,
  tensors: Tensor[],
  fault: FrameFault,
  which: number,
  oversizeBytes: number,
): Array<string | Uint8Array> {
  const n = tensors.length;
  const target = n === 0 ? 0 : which % n;
  const announced = fault === 'drop' ? n : fault === 'miscount' ? n + 1 : fault === 'extra' ? n : n;
  const text = JSON.stringify({ ...message, v: 1, id, tensors: announced });
  const frames = tensors.map((t, i) => encodeFrame(id, i, t));
  const broken = frames[target];
  const out: Array<string | Uint8Array> = [text, ...frames];
  const replace = (frame: Uint8Array): void => void out.splice(1 + target, 1, frame);
  const header = (offset: number, byte: number): void => {
    const copy = broken!.slice();
    copy[offset] = byte;
    replace(copy);
  };
  switch (fault) {
    case 'drop':
      out.splice(1 + target, 1);
      break;
    case 'extra':
      out.push(encodeFrame(id, n, { dtype: 'f32', shape: [4], data: new Float32Array(4) }));
      break;
    case 'miscount':
      break;
    case 'dtype': {
      const t = tensors[target]!;
      const data = t.dtype === 'f32' ? new Int32Array(t.data.length) : new Float32Array(t.data.length);
      replace(encodeFrame(id, target, { dtype: t.dtype === 'f32' ? 'i32' : 'f32', shape: t.shape, data }));
      break;
    }
    case 'shape': {
      const t = tensors[target]!;
      const shape = [...t.shape];
      shape[shape.length - 1]! += 1;
      const size = shape.reduce((a, b) => a * b, 1);
      const data = t.dtype === 'f32' ? new Float32Array(size) : new Int32Array(size);
      replace(encodeFrame(id, target, { dtype: t.dtype, shape, data }));
      break;
    }
    case 'rank': {
      const t = tensors[target]!;
      const shape =
        t.shape.length < 4
          ? [1, ...t.shape]
          : t.shape.slice(1).map((d, i) => (i === 0 ? d * t.shape[0]! : d));
      replace(encodeFrame(id, target, { ...t, shape }));
      break;
    }
    case 'truncate':
      if (broken) replace(broken.slice(0, Math.max(0, broken.length - 1 - (which % 7))));
      break;
    case 'pad':
      if (broken) {
        const padded = new Uint8Array(broken.length + 4);
        padded.set(broken);
        replace(padded);
      }
      break;
    case 'magic':
      if (broken) header(0, broken[0]! ^ 0xff);
      break;
    case 'version':
      if (broken) header(4, 2);
      break;
    case 'codec':
      if (broken) header(6, 1 + (which % 5));
      break;
    case 'message-id':
      if (broken) header(8, broken[8]! ^ 1);
      break;
    case 'index':
      if (broken) header(12, broken[12]! + 1);
      break;
    case 'text-instead':
      if (n > 0) out.splice(1 + target, 1, JSON.stringify({ v: 1, id, tensors: 0, type: 'ping', sentAt: 1 }));
      break;
    case 'oversize':
      if (n > 0) replace(new Uint8Array(oversizeBytes));
      break;
  }
  return out;
}
