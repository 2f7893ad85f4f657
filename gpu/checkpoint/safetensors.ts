/**
 * The safetensors file format (F32 tensors only): an 8-byte little-endian header length N, N bytes of JSON
 * (padded with spaces so the data starts 8-byte aligned), then the tensors' bytes, back to back. Pure code
 * with no Node imports, so browsers can read and write checkpoints too.
 *
 * Decoding trusts nothing: every length, offset and type is checked before a byte is read, and each
 * failure is an Error that says what is wrong.
 */
import type { NamedTensor } from '../stage/types.js';

export const maxHeaderBytes = 100_000_000;

const metadataKey = '__metadata__';
/** dtypes the format defines; any other is not a safetensors file we can read. */
const knownDtypes = new Set([
  'BOOL',
  'U8',
  'I8',
  'F8_E5M2',
  'F8_E4M3',
  'I16',
  'U16',
  'F16',
  'BF16',
  'I32',
  'U32',
  'F32',
  'F64',
  'I64',
  'U64',
]);

// Tensor bytes are copied as they lie in memory, which is the file's byte order only on little-endian hosts
// (every platform WebGPU runs on).
if (new Uint8Array(Float32Array.of(1).buffer)[3] !== 0x3f) {
  throw new Error('safetensors: this host is big-endian, which is not supported');
}

export interface Safetensors {
  tensors: NamedTensor[];
  metadata: Record<string, string>;
}

export function encodeSafetensors(tensors: NamedTensor[], metadata: Record<string, string>): Uint8Array {
  const seen = new Set<string>();
  const entries: string[] = [];
  const metaEntries = Object.entries(metadata);
  if (metaEntries.length > 0) {
    for (const [k, v] of metaEntries) {
      if (typeof v !== 'string')
        throw new Error(`safetensors: metadata ${JSON.stringify(k)} must be a string`);
    }
    entries.push(`${JSON.stringify(metadataKey)}:${JSON.stringify(Object.fromEntries(metaEntries))}`);
  }
  let offset = 0;
  for (const t of tensors) {
    if (t.name === '' || t.name === metadataKey)
      throw new Error(`safetensors: invalid tensor name ${JSON.stringify(t.name)}`);
    if (seen.has(t.name)) throw new Error(`safetensors: duplicate tensor name ${t.name}`);
    seen.add(t.name);
    const count = elementCount(t.name, t.shape);
    if (count !== t.data.length) {
      throw new Error(
        `safetensors: ${t.name} has shape [${t.shape}] (${count} values) but ${t.data.length} values`,
      );
    }
    const info = { dtype: 'F32', shape: t.shape, data_offsets: [offset, offset + t.data.byteLength] };
    // Built as text, not as an object, so names like "__proto__" stay ordinary keys and the order is kept.
    entries.push(`${JSON.stringify(t.name)}:${JSON.stringify(info)}`);
    offset += t.data.byteLength;
  }
  const json = new TextEncoder().encode(`{${entries.join(',')}}`);
  const headerLength = Math.ceil(json.length / 8) * 8;
  if (headerLength > maxHeaderBytes)
    throw new Error(`safetensors: header of ${headerLength} bytes exceeds the 100 MB limit`);
  const out = new Uint8Array(8 + headerLength + offset);
  const view = new DataView(out.buffer);
  view.setUint32(0, headerLength, true);
  view.setUint32(4, 0, true);
  out.set(json, 8);
  out.fill(0x20, 8 + json.length, 8 + headerLength);
  let at = 8 + headerLength;
  for (const t of tensors) {
    out.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), at);
    at += t.data.byteLength;
  }
  return out;
}

interface TensorEntry {
  name: string;
  shape: number[];
  begin: number;
  end: number;
}

export function decodeSafetensors(bytes: Uint8Array): Safetensors {
  if (bytes.length < 8)
    throw new Error(`safetensors: truncated file (${bytes.length} bytes, the header length alone is 8)`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const low = view.getUint32(0, true);
  const high = view.getUint32(4, true);
  if (high !== 0 || low > maxHeaderBytes) {
    throw new Error(`safetensors: header of ${high * 2 ** 32 + low} bytes exceeds the 100 MB limit`);
  }
  const headerLength = low;
  if (8 + headerLength > bytes.length) {
    throw new Error(
      `safetensors: truncated file (header says ${headerLength} bytes, only ${bytes.length - 8} follow)`,
    );
  }
  const header = parseHeader(bytes.subarray(8, 8 + headerLength));
  const dataStart = 8 + headerLength;
  const dataLength = bytes.length - dataStart;

  let metadata: Record<string, string> = {};
  const entries: TensorEntry[] = [];
  for (const [name, value] of Object.entries(header)) {
    if (name === metadataKey) metadata = parseMetadata(value);
    else entries.push(parseTensorInfo(name, value, dataLength));
  }
  checkLayout(entries, dataLength);

  const tensors = entries.map((e): NamedTensor => {
    const data = new Float32Array((e.end - e.begin) / 4);
    // Copied byte-wise: the tensor's offset in the file need not be 4-byte aligned in memory.
    new Uint8Array(data.buffer).set(bytes.subarray(dataStart + e.begin, dataStart + e.end));
    return { name: e.name, shape: e.shape, data };
  });
  return { tensors, metadata };
}

function parseHeader(raw: Uint8Array): Record<string, unknown> {
  let text: string;
  try {
    text = new TextDecoder('utf-8', { fatal: true, ignoreBOM: true }).decode(raw);
  } catch {
    throw new Error('safetensors: header is not valid UTF-8');
  }
  if (!text.startsWith('{')) throw new Error('safetensors: header does not start with "{"');
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch (err) {
    throw new Error(`safetensors: header is not valid JSON (${(err as Error).message})`);
  }
  if (!isPlainObject(parsed)) throw new Error('safetensors: header is not a JSON object');
  return parsed;
}

function parseMetadata(value: unknown): Record<string, string> {
  if (!isPlainObject(value)) throw new Error('safetensors: __metadata__ is not an object');
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(value)) {
    if (typeof v !== 'string') throw new Error(`safetensors: __metadata__.${k} is not a string`);
    Object.defineProperty(out, k, { value: v, enumerable: true, writable: true, configurable: true });
  }
  return out;
}

function parseTensorInfo(name: string, value: unknown, dataLength: number): TensorEntry {
  const where = `safetensors: tensor ${JSON.stringify(name)}`;
  if (!isPlainObject(value)) throw new Error(`${where} is not described by an object`);
  const { dtype, shape, data_offsets: offsets } = value;
  if (typeof dtype !== 'string' || !knownDtypes.has(dtype))
    throw new Error(`${where} has unknown dtype ${JSON.stringify(dtype)}`);
  if (dtype !== 'F32') throw new Error(`${where} has dtype ${dtype}; only F32 is supported`);
  if (!Array.isArray(shape) || !shape.every(isCount)) throw new Error(`${where} has an invalid shape`);
  if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every(isCount)) {
    throw new Error(`${where} has invalid data_offsets`);
  }
  const [begin, end] = offsets as [number, number];
  if (begin > end) throw new Error(`${where} has data_offsets [${begin}, ${end}] that run backwards`);
  if (end > dataLength)
    throw new Error(`${where} ends at byte ${end}, past the ${dataLength} bytes of data (truncated file?)`);
  const count = elementCount(name, shape as number[]);
  if (count * 4 !== end - begin) {
    throw new Error(
      `${where} has shape [${shape}] (${count * 4} bytes) but data_offsets span ${end - begin} bytes`,
    );
  }
  return { name, shape: [...(shape as number[])], begin, end };
}

/** The tensors must tile the data exactly: no overlap, no gap, nothing left over. */
function checkLayout(entries: TensorEntry[], dataLength: number): void {
  entries.sort((a, b) => a.begin - b.begin || a.end - b.end);
  let expected = 0;
  for (const e of entries) {
    if (e.begin < expected)
      throw new Error(`safetensors: tensor ${JSON.stringify(e.name)} overlaps the tensor before it`);
    if (e.begin > expected)
      throw new Error(`safetensors: gap in the data before tensor ${JSON.stringify(e.name)}`);
    expected = e.end;
  }
  if (expected !== dataLength) {
    throw new Error(
      `safetensors: ${dataLength - expected} bytes of data after the last tensor are not described`,
    );
  }
}

function elementCount(name: string, shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) {
    if (!isCount(d)) throw new Error(`safetensors: ${name} has an invalid dimension ${d}`);
    n *= d;
  }
  if (!Number.isSafeInteger(n * 4)) throw new Error(`safetensors: ${name} is too large`);
  return n;
}

function isCount(x: unknown): x is number {
  return typeof x === 'number' && Number.isSafeInteger(x) && x >= 0;
}

function isPlainObject(x: unknown): x is Record<string, unknown> {
  return typeof x === 'object' && x !== null && !Array.isArray(x);
}
