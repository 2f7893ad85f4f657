import { closeSync, existsSync, openSync, readSync, renameSync, statSync } from 'node:fs';
import Database from 'better-sqlite3';
import { headPath, readHead } from './head-file.js';

export type LedgerHealth =
  { state: 'absent' } | { state: 'ok'; entries: number } | { state: 'unusable'; reason: string };

const SQLITE_MAGIC = 'SQLite format 3\0';

/**
 * A quick look at a ledger file before anything opens it for writing: SQLite would take an emptied or
 * truncated file for a new, empty database and the node would carry on without a word. Reads only.
 */
export function inspectLedger(path: string): LedgerHealth {
  const head = readHead(path);
  const headSeq = head.kind === 'ok' ? head.head.seq : 0;
  if (!existsSync(path)) {
    return headSeq > 0
      ? {
          state: 'unusable',
          reason: `the ledger file is gone, but its signed chain head records ${headSeq} entries`,
        }
      : { state: 'absent' };
  }
  const size = statSync(path).size;
  if (size === 0) return { state: 'unusable', reason: 'the ledger file is empty (0 bytes)' };
  const header = Buffer.alloc(100);
  const fd = openSync(path, 'r');
  try {
    readSync(fd, header, 0, 100, 0);
  } finally {
    closeSync(fd);
  }
  if (size < 100 || header.toString('latin1', 0, 16) !== SQLITE_MAGIC)
    return { state: 'unusable', reason: `the ledger file is not a SQLite database (${size} bytes)` };
  const pageSize = header.readUInt16BE(16) === 1 ? 65_536 : header.readUInt16BE(16);
  const pages = header.readUInt32BE(28);
  if (pages > 0 && pages * pageSize > size)
    return {
      state: 'unusable',
      reason: `the ledger file is truncated (${size} bytes; its header says ${pages * pageSize})`,
    };
  let db: Database.Database | null = null;
  try {
    db = new Database(path, { readonly: true, fileMustExist: true });
    const check = db.pragma('quick_check', { simple: true });
    if (check !== 'ok') return { state: 'unusable', reason: `the ledger file is damaged (${String(check)})` };
    const hasSchema = db
      .prepare("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'chain_head'")
      .get();
    if (!hasSchema) return { state: 'unusable', reason: 'the file holds no Tributary ledger' };
    const chain = db.prepare('SELECT seq FROM chain_head WHERE id = 1').get() as { seq: number } | undefined;
    const entries = chain?.seq ?? 0;
    if (headSeq > entries)
      return {
        state: 'unusable',
        reason: `the ledger ends at entry #${entries}, but its signed chain head records ${headSeq} entries (the newest were deleted)`,
      };
    return { state: 'ok', entries };
  } catch (err) {
    return { state: 'unusable', reason: `the ledger file cannot be read: ${(err as Error).message}` };
  } finally {
    db?.close();
  }
}

/** Moves an unusable ledger (and its WAL, shared memory and head files) aside; returns where it went. */
export function setLedgerAside(path: string, now: Date): string {
  const aside = `${path}.unusable-${now.toISOString().replace(/[:.]/g, '-')}`;
  for (const suffix of ['', '-wal', '-shm']) {
    if (existsSync(path + suffix)) renameSync(path + suffix, aside + suffix);
  }
  if (existsSync(headPath(path))) renameSync(headPath(path), headPath(aside));
  return aside;
}
