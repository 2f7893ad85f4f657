import {
  closeSync,
  existsSync,
  fstatSync,
  mkdirSync,
  openSync,
  renameSync,
  rmSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';

export interface RotatingLogOptions {
  dir: string;
  /** The live file's name; older ones get .1, .2, … (.1 the newest). */
  name?: string;
  /** Rotate once the live file reaches this size. */
  maxBytes?: number;
  /** How many old files are kept beside the live one. */
  keep?: number;
}

/**
 * A pino destination that appends to `<dir>/tributary.log` and rotates by size, keeping a few old files, so
 * a desktop app that runs for months neither loses its history nor fills the disk. Writes are synchronous:
 * the last lines before a crash or a session end are on disk.
 */
export class RotatingLog {
  private fd: number;
  private size: number;
  private readonly path: string;
  private readonly maxBytes: number;
  private readonly keep: number;

  constructor(private readonly options: RotatingLogOptions) {
    mkdirSync(options.dir, { recursive: true, mode: 0o700 });
    this.path = join(options.dir, options.name ?? 'tributary.log');
    this.maxBytes = options.maxBytes ?? 5 * 1024 * 1024;
    this.keep = options.keep ?? 4;
    this.fd = openSync(this.path, 'a', 0o600);
    this.size = fstatSync(this.fd).size;
  }

  get file(): string {
    return this.path;
  }

  write(chunk: string): boolean {
    const bytes = Buffer.byteLength(chunk);
    if (this.size > 0 && this.size + bytes > this.maxBytes) this.rotate();
    writeSync(this.fd, chunk);
    this.size += bytes;
    return true;
  }

  close(): void {
    closeSync(this.fd);
  }

  private rotate(): void {
    closeSync(this.fd);
    rmSync(`${this.path}.${this.keep}`, { force: true });
    for (let i = this.keep - 1; i >= 1; i--) {
      if (existsSync(`${this.path}.${i}`)) renameSync(`${this.path}.${i}`, `${this.path}.${i + 1}`);
    }
    renameSync(this.path, `${this.path}.1`);
    this.fd = openSync(this.path, 'a', 0o600);
    this.size = 0;
  }
}
