import { chmodSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { z } from 'zod';
import { parseJsonOrNull } from '../../shared/protocol/receipt.js';

/** Where a node remembers coordinator keys, by the coordinator's URL. */
export interface CoordinatorPins {
  /** The key pinned for this URL, or null when the node has never met it. */
  get(url: string): string | null;
  /** Pins `key` for `url`, replacing any earlier pin (only on first contact or when the person says so). */
  set(url: string, key: string): void;
}

const pinsSchema = z.record(z.string().max(500), z.string().regex(/^[0-9a-f]{64}$/));

/**
 * Trust on first use, kept in the data directory (0600): the first key a coordinator URL presents is
 * recorded, and afterwards a different key at that URL is refused until the person pins the new one
 * (`--coordinator-key`). A file that is not a valid pin list is an error, never an empty list: that would
 * quietly trust whoever answers next.
 */
export class FileCoordinatorPins implements CoordinatorPins {
  constructor(readonly path: string) {}

  private read(): Record<string, string> {
    let text: string;
    try {
      text = readFileSync(this.path, 'utf8');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
      throw err;
    }
    const parsed = pinsSchema.safeParse(parseJsonOrNull(text));
    if (!parsed.success)
      throw new Error(`${this.path} is not a list of pinned coordinator keys; fix or remove it`);
    return parsed.data;
  }

  get(url: string): string | null {
    return this.read()[url] ?? null;
  }

  set(url: string, key: string): void {
    const pins = { ...this.read(), [url]: key };
    mkdirSync(dirname(this.path), { recursive: true, mode: 0o700 });
    const tmp = `${this.path}.tmp`;
    writeFileSync(tmp, `${JSON.stringify(pins, null, 2)}\n`, { mode: 0o600 });
    renameSync(tmp, this.path);
    if (process.platform !== 'win32') chmodSync(this.path, 0o600);
  }
}

/** Pins for this process only: a node without a data directory still refuses a key change mid-run. */
export class MemoryCoordinatorPins implements CoordinatorPins {
  private readonly pins = new Map<string, string>();
  get(url: string): string | null {
    return this.pins.get(url) ?? null;
  }
  set(url: string, key: string): void {
    this.pins.set(url, key);
  }
}
