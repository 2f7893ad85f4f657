/**
 * The unit the wallet counts in. One credit is 10^15 floating-point operations (one PFLOP) of verified
 * training work, as the coordinator's receipts measure it; the ledger itself keeps FLOP.
 */
export const FLOP_PER_CREDIT = 1e15;

export function flopsToCredits(flops: number): number {
  return flops / FLOP_PER_CREDIT;
}

/** "8.46 credits", "0.0062 credits": enough digits that a day's small work does not read as zero. */
export function formatCredits(flops: number): string {
  const credits = flopsToCredits(flops);
  if (!Number.isFinite(credits) || credits === 0) return '0 credits';
  const abs = Math.abs(credits);
  const digits = abs >= 100 ? 0 : abs >= 1 ? 2 : Math.min(8, 1 - Math.floor(Math.log10(abs)));
  const text = credits.toFixed(digits);
  return `${text} ${text === '1' || text === '1.00' ? 'credit' : 'credits'}`;
}
