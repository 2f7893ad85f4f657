import { InvalidArgumentError } from 'commander';
import { join } from 'node:path';
import { LinkSpecError, parseLink, type LinkShape } from '../node/link-shaping.js';

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

/** Commander parser for `--link RATE,DELAY` (e.g. 80mbit,40ms). */
export function linkShape(value: string): LinkShape {
  try {
    return parseLink(value);
  } catch (err) {
    if (err instanceof LinkSpecError) throw new InvalidArgumentError(err.message);
    throw err;
  }
}

/** Commander parser for `--data-plane`: tensors through the coordinator, or between the nodes over libp2p. */
export function dataPlane(value: string): 'relay' | 'p2p' {
  if (value !== 'relay' && value !== 'p2p') throw new InvalidArgumentError('expected relay or p2p');
  return value;
}

export const logLevels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function logLevel(value: string): string {
  if (!logLevels.includes(value)) throw new InvalidArgumentError(`expected one of ${logLevels.join(', ')}`);
  return value;
}

/**
 * Commander parser for the coordinator's address: a ws:// or wss:// URL. Checked while parsing, so a typo
 * exits with code 2 before a key or a ledger is created.
 */
export function coordinatorUrl(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new InvalidArgumentError('expected a URL such as ws://HOST:7700');
  }
  if (url.protocol === 'http:' || url.protocol === 'https:') {
    const scheme = url.protocol === 'https:' ? 'wss' : 'ws';
    throw new InvalidArgumentError(
      `nodes talk to the coordinator over WebSocket: use ${scheme}://${url.host}${url.pathname === '/' ? '' : url.pathname}`,
    );
  }
  if (url.protocol !== 'ws:' && url.protocol !== 'wss:')
    throw new InvalidArgumentError(`expected a ws:// or wss:// URL, not ${url.protocol}//`);
  return value;
}

/** The node's identity lives in its data dir, so two nodes on one machine (two data dirs) are two nodes. */
export function nodeKeyPath(dataDir: string): string {
  return join(dataDir, 'node.key');
}

/** Bad input found after parsing (a settings file, a combination of flags): exit code 2, like a bad flag. */
export class UsageError extends Error {
  override name = 'UsageError';
}

/** Runs `read` (a file or a config a flag names); what it throws is bad usage, prefixed with `what` if given. */
export function usage<T>(read: () => T, what?: string): T {
  try {
    return read();
  } catch (err) {
    const message = (err as Error).message;
    throw new UsageError(what ? `${what}: ${message}` : message);
  }
}
