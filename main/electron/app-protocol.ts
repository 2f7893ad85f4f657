import { extname, relative, resolve, sep } from 'node:path';
import { APP_SCHEME } from './channels.js';

/** Which folder each app:// host serves: the renderer bundle and the GPU worker page, nothing else. */
export type AppRoots = Record<string, string>;

/**
 * Maps app://<host>/<path> to a file inside that host's folder, or null: unknown host, another scheme,
 * or a path that escapes the folder. `/` is the page itself.
 */
export function resolveAppUrl(rawUrl: string, roots: AppRoots): string | null {
  let url: URL;
  try {
    url = new URL(rawUrl);
  } catch {
    return null;
  }
  if (url.protocol !== `${APP_SCHEME}:`) return null;
  const root = Object.hasOwn(roots, url.host) ? roots[url.host] : undefined;
  if (!root) return null;
  let path: string;
  try {
    path = decodeURIComponent(url.pathname);
  } catch {
    return null;
  }
  if (path.includes('\0')) return null;
  const base = resolve(root);
  const file = resolve(base, `.${path === '/' ? '/index.html' : path}`);
  const inside = relative(base, file);
  if (inside === '' || inside.startsWith('..') || inside.split(sep).includes('..')) return null;
  return file;
}

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
};

export function contentType(file: string): string {
  return TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream';
}

/**
 * Sent with every page as a header as well as the pages' meta tag; the header also covers what a meta tag
 * cannot (frame-ancestors).
 */
export const APP_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
  "object-src 'none'",
].join('; ');
