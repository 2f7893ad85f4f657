import { InvalidArgumentError } from 'commander';
import { homedir } from 'node:os';
import { join } from 'node:path';

/** Commander parser for whole numbers in [min, max]. */
export function integer(min: number, max = Number.MAX_SAFE_INTEGER): (value: string) => number {
  return (value) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min || n > max)
      throw new InvalidArgumentError(`expected a whole number from ${min} to ${max}`);
    return n;
  };
}

export function engineKind(value: string): 'gpu' | 'cpu' {
  if (value !== 'gpu' && value !== 'cpu') throw new InvalidArgumentError('expected gpu or cpu');
  return value;
}

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function logLevel(value: string): string {
  if (!logLevels.includes(value)) throw new InvalidArgumentError(`expected one of ${logLevels.join(', ')}`);
  return value;
}

/** Where a headless node keeps its identity by default. */
export function defaultNodeKeyPath(): string {
  return join(homedir(), '.tributary', 'node.key');
}

/** Bad input found after parsing (a settings file, a combination of flags): exit code 2, like a bad flag. */
export class UsageError extends Error {
  override name = 'UsageError';
}
