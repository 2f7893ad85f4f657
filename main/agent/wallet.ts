import { keccak_256 } from '@noble/hashes/sha3';
import { bytesToHex } from '@noble/hashes/utils';
import type { Ledger } from './ledger/ledger.js';

export type AddressResult = { ok: true; address: string } | { ok: false; error: string };

/** EIP-55: hex digit i is upper case when nibble i of keccak256(lowercase hex) is 8 or more. */
export function toChecksumAddress(hex40: string): string {
  const lower = hex40.toLowerCase();
  const hash = bytesToHex(keccak_256(new TextEncoder().encode(lower)));
  let out = '0x';
  for (let i = 0; i < 40; i++) {
    const c = lower[i]!;
    out += parseInt(hash[i]!, 16) >= 8 ? c.toUpperCase() : c;
  }
  return out;
}

/**
 * Accepts an EVM payout address. Mixed case must carry a correct EIP-55 checksum (it catches typos); an
 * all-lower or all-upper address has no checksum to check and is stored in checksummed form.
 */
export function validatePayoutAddress(input: string): AddressResult {
  const text = input.trim();
  const m = /^0x([0-9a-fA-F]{40})$/.exec(text);
  if (!m)
    return { ok: false, error: 'A payout address is "0x" followed by 40 hexadecimal digits (0-9, a-f).' };
  const body = m[1]!;
  const checksummed = toChecksumAddress(body);
  const mixedCase = body !== body.toLowerCase() && body !== body.toUpperCase();
  if (mixedCase && checksummed !== `0x${body}`) {
    return { ok: false, error: 'This address fails its EIP-55 checksum: a character is probably mistyped.' };
  }
  return { ok: true, address: checksummed };
}

export interface Reconciliation {
  matches: boolean;
  localFlops: number;
  statementFlops: number;
  /** statement - local: positive means the coordinator credits more than the ledger holds. */
  differenceFlops: number;
  /** In the statement but not in the local ledger (or revoked locally). */
  missingLocally: string[];
  /** Confirmed locally but absent from the statement. */
  missingFromStatement: string[];
  summary: string;
}

/**
 * Compares the locally confirmed credits with what the coordinator's statements confirmed and explains any
 * difference. Pending credits are left out: the coordinator has not spoken about them yet.
 */
export function reconcile(ledger: Ledger): Reconciliation {
  const { localFlops, statementFlops, missingLocally, missingFromStatement } = ledger.compareWithStatements();
  const differenceFlops = statementFlops - localFlops;
  const tolerance = 1e-9 * Math.max(1, Math.abs(localFlops));
  const matches =
    missingLocally.length === 0 &&
    missingFromStatement.length === 0 &&
    Math.abs(differenceFlops) <= tolerance;
  const parts: string[] = [];
  if (missingLocally.length > 0)
    parts.push(`${missingLocally.length} receipt(s) in the statement are not in your ledger`);
  if (missingFromStatement.length > 0)
    parts.push(`${missingFromStatement.length} receipt(s) in your ledger are not in the statement`);
  if (Math.abs(differenceFlops) > tolerance) {
    parts.push(
      `totals differ by ${formatFlops(differenceFlops)} (statement ${formatFlops(statementFlops)}, ledger ${formatFlops(localFlops)})`,
    );
  }
  return {
    matches,
    localFlops,
    statementFlops,
    differenceFlops,
    missingLocally,
    missingFromStatement,
    summary: matches
      ? `Balance matches the coordinator: ${formatFlops(localFlops)}`
      : `Balance differs: ${parts.join('; ')}`,
  };
}

export function formatFlops(flops: number): string {
  const abs = Math.abs(flops);
  if (abs >= 1e15) return `${(flops / 1e15).toFixed(3)} PFLOP`;
  if (abs >= 1e12) return `${(flops / 1e12).toFixed(3)} TFLOP`;
  return `${(flops / 1e9).toFixed(3)} GFLOP`;
}
