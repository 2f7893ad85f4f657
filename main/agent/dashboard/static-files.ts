import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import { extname, join, relative, resolve, sep } from 'node:path';

const TYPES: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.ico': 'image/x-icon',
  '.woff2': 'font/woff2',
  '.wasm': 'application/wasm',
  '.map': 'application/json',
};

/**
 * Resolves a URL path inside `root`, refusing anything that escapes it. Paths without a file fall back to
 * index.html, so the single-page app can own its routes.
 */
export async function resolveStatic(
  root: string,
  urlPath: string,
): Promise<{ file: string; type: string } | null> {
  let decoded: string;
  try {
    decoded = decodeURIComponent(urlPath);
  } catch {
    return null;
  }
  if (decoded.includes('\0')) return null;
  const base = resolve(root);
  const candidate = resolve(base, `.${decoded}`);
  const rel = relative(base, candidate);
  if (rel.startsWith('..') || rel.split(sep).includes('..')) return null;
  for (const file of [candidate, join(candidate, 'index.html'), join(base, 'index.html')]) {
    const info = await stat(file).catch(() => null);
    if (info?.isFile())
      return { file, type: TYPES[extname(file).toLowerCase()] ?? 'application/octet-stream' };
  }
  return null;
}

export function streamFile(file: string): NodeJS.ReadableStream {
  return createReadStream(file);
}
