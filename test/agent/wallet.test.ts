import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Ledger } from '../../main/agent/ledger/ledger.js';
import { reconcile, toChecksumAddress, validatePayoutAddress } from '../../main/agent/wallet.js';
import { testCoordinator, testReceipt } from './signing.js';

describe('payout address', () => {
  // The checksummed examples published with EIP-55.
  const vectors = [
    '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
    '0xfB6916095ca1df60bB79Ce92cE3Ea74c37c5d359',
    '0xdbF03B407c01E7cD3CBea99509d93f8DDDC8C6FB',
    '0xD1220A0cf47c7B9Be7A2E6BA89F429762e7b9aDb',
  ];

  it('computes EIP-55 checksums', () => {
    for (const v of vectors) expect(toChecksumAddress(v.slice(2))).toBe(v);
  });

  it('accepts checksummed and single-case addresses, storing the checksummed form', () => {
    for (const v of vectors) expect(validatePayoutAddress(v)).toEqual({ ok: true, address: v });
    expect(validatePayoutAddress(` ${vectors[0]!.toLowerCase()} `)).toEqual({
      ok: true,
      address: vectors[0],
    });
    expect(validatePayoutAddress(`0x${vectors[1]!.slice(2).toUpperCase()}`)).toEqual({
      ok: true,
      address: vectors[1],
    });
  });

  it('refuses a mistyped character and malformed input with a reason', () => {
    const typo = vectors[0]!.replace('aA', 'Aa');
    expect(validatePayoutAddress(typo)).toEqual({
      ok: false,
      error: expect.stringMatching(/EIP-55 checksum/),
    });
    for (const bad of [
      '',
      '5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
      '0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAe',
      '0xZZAeb6053F3E94C9b9A09f33669435E7Ef1BeAed',
    ]) {
      expect(validatePayoutAddress(bad)).toEqual({
        ok: false,
        error: expect.stringMatching(/40 hexadecimal digits/),
      });
    }
  });
});

describe("reconciliation with the coordinator's statements", () => {
  const dir = mkdtempSync(join(tmpdir(), 'tributary-wallet-'));
  afterAll(() => rmSync(dir, { recursive: true, force: true }));
  const coordinator = testCoordinator();
  const ledger = new Ledger(join(dir, 'ledger.sqlite'));
  for (let i = 1; i <= 4; i++) ledger.acceptReceipt(coordinator.sign(testReceipt(i)));
  const flops = (ids: number[]): number => ids.reduce((s, i) => s + testReceipt(i).flops, 0);

  it('matches when the statements confirm the same receipts and total', () => {
    ledger.applyStatement(
      coordinator.state({
        seq: 1,
        receipts: 4,
        confirmed: ['r-1', 'r-2'],
        revoked: [{ receiptId: 'r-4', reason: 'failed verification' }],
        confirmedFlops: flops([1, 2]),
      }),
    );
    const result = reconcile(ledger);
    expect(result).toMatchObject({
      matches: true,
      differenceFlops: 0,
      missingLocally: [],
      missingFromStatement: [],
    });
    expect(result.summary).toBe('Balance matches the coordinator: 3.000 TFLOP');
  });

  it('leaves pending credits out and shows each difference', () => {
    // Confirmed here without a statement (verify would say so), and a statement for a receipt never received.
    ledger.confirmCredit('r-3');
    ledger.applyStatement(
      coordinator.state({ seq: 2, receipts: 4, confirmed: ['r-9'], confirmedFlops: flops([1, 2]) + 2e12 }),
    );
    const result = reconcile(ledger);
    expect(result.matches).toBe(false);
    expect(result.missingLocally).toEqual(['r-9']);
    expect(result.missingFromStatement).toEqual(['r-3']);
    expect(result.differenceFlops).toBe(flops([1, 2]) + 2e12 - flops([1, 2, 3]));
    expect(result.summary).toBe(
      'Balance differs: 1 receipt(s) in the statement are not in your ledger; 1 receipt(s) in your ledger are not in the statement; ' +
        'totals differ by 500.000 GFLOP (statement 5.000 TFLOP, ledger 4.500 TFLOP)',
    );
  });
});
