import type { AgentSnapshot, ReceiptStatus } from '../shared/dashboard/contract.js';

type StageInfo = NonNullable<AgentSnapshot['stage']>;

/** "Stage 3 of 8, blocks 6–8": people count from one. */
export function formatStage(stage: StageInfo): string {
  const blocks =
    stage.firstBlock === stage.lastBlock
      ? `block ${stage.firstBlock + 1}`
      : `blocks ${stage.firstBlock + 1}–${stage.lastBlock + 1}`;
  return `Stage ${stage.index + 1} of ${stage.count}, ${blocks}`;
}

const FLOP_UNITS = ['FLOP', 'kFLOP', 'MFLOP', 'GFLOP', 'TFLOP', 'PFLOP', 'EFLOP'];

/** Work in the unit a person can read: "12.4 TFLOP". */
export function formatFlops(flops: number): string {
  if (!Number.isFinite(flops) || flops === 0) return '0 FLOP';
  let value = Math.abs(flops);
  let unit = 0;
  while (value >= 1000 && unit < FLOP_UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  const digits = value >= 100 || unit === 0 ? 0 : value >= 10 ? 1 : 2;
  return `${flops < 0 ? '-' : ''}${value.toFixed(digits)} ${FLOP_UNITS[unit]}`;
}

export function formatPercent(value: number): string {
  return `${Math.round(value)}%`;
}

export function formatCelsius(value: number): string {
  return `${Math.round(value)} °C`;
}

export function formatInteger(value: number): string {
  return Math.round(value).toLocaleString('en-US');
}

/** "14:05" today, "25 Nov, 14:05" on another day. */
export function formatDateTime(iso: string, now: Date = new Date()): string {
  const date = new Date(iso);
  if (Number.isNaN(date.getTime())) return iso;
  const time = date.toLocaleTimeString('en-GB', { hour: '2-digit', minute: '2-digit' });
  if (date.toDateString() === now.toDateString()) return time;
  return `${date.toLocaleDateString('en-GB', { day: 'numeric', month: 'short' })}, ${time}`;
}

export const RECEIPT_STATUS_LABEL: Record<ReceiptStatus, string> = {
  confirmed: 'Confirmed',
  pending: 'Pending',
  revoked: 'Revoked',
};

export const STATE_LABEL: Record<AgentSnapshot['state'], string> = {
  running: 'Contributing',
  waiting: 'Waiting',
  paused: 'Paused',
};
