import type { ReceiptRow } from '../shared/dashboard/contract.js';

const COLUMNS: (keyof ReceiptRow)[] = [
  'issuedAt',
  'receiptId',
  'runId',
  'stage',
  'step',
  'tokens',
  'flops',
  'status',
  'verified',
];

function cell(value: string | number | boolean): string {
  const text = String(value);
  // Quote anything a spreadsheet could split or run as a formula.
  const guarded = /^[=+\-@]/.test(text) && typeof value === 'string' ? `'${text}` : text;
  return /[",\n\r]/.test(guarded) || guarded !== text ? `"${guarded.replace(/"/g, '""')}"` : guarded;
}

/** The receipts as RFC 4180 CSV with a header row. */
export function receiptsCsv(receipts: ReceiptRow[]): string {
  const lines = [COLUMNS.join(',')];
  for (const receipt of receipts) lines.push(COLUMNS.map((column) => cell(receipt[column])).join(','));
  return `${lines.join('\r\n')}\r\n`;
}

/** Hands a text file to the browser's (or Electron's) download flow. */
export function downloadText(fileName: string, text: string, type: string): void {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const link = document.createElement('a');
  link.href = url;
  link.download = fileName;
  link.click();
  setTimeout(() => URL.revokeObjectURL(url), 0);
}
