import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ledger, LedgerFull } from '../../main/agent/ledger/ledger.js';
import { testCoordinator, testReceipt } from './signing.js';

/** A small tmpfs to fill; null where this machine does not let us mount one (not root, no CAP_SYS_ADMIN). */
function smallDisk(): { dir: string; release(): void } | null {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-full-'));
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'ignore' });
  } catch {
    rmSync(dir, { recursive: true, force: true });
    return null;
  }
  return {
    dir,
    release: () => {
      execFileSync('umount', [dir]);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

const disk = smallDisk();
afterAll(() => disk?.release());

describe('ledger on a full disk', () => {
  it.skipIf(disk === null)(
    'refuses the append with a clear error, loses nothing, and carries on once there is room',
    () => {
      const path = join(disk!.dir, 'data', 'ledger.sqlite');
      mkdirSync(join(disk!.dir, 'data'));
      const coordinator = testCoordinator();
      const ledger = new Ledger(path, { trustedCoordinatorKeys: [coordinator.keyHex] });
      const filler = join(disk!.dir, 'filler');
      writeFileSync(filler, Buffer.alloc(700 * 1024));
      let stored = 0;
      let refusal: unknown = null;
      for (let i = 1; i < 10_000 && refusal === null; i++) {
        try {
          ledger.acceptReceipt(coordinator.sign(testReceipt(i)));
          ledger.recordEvent('note', { padding: 'x'.repeat(2000) });
          stored += 3;
        } catch (err) {
          refusal = err;
        }
      }
      expect(refusal).toBeInstanceOf(LedgerFull);
      expect((refusal as Error).message).toMatch(/is full: nothing was written and nothing is lost/);
      rmSync(filler);
      ledger.recordEvent('after', {});
      const result = ledger.verify();
      ledger.close();
      expect(result.problems).toEqual([]);
      // A receipt is two entries (receipt and credit), an event one: the refused append left none of its own.
      expect(result.entries).toBeGreaterThanOrEqual(stored + 1);
      expect(result.entries).toBeLessThanOrEqual(stored + 3);
    },
  );
});
