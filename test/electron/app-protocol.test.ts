import { join, resolve } from 'node:path';
import { describe, expect, it } from 'vitest';
import { APP_CSP, contentType, resolveAppUrl } from '../../main/electron/app-protocol.js';

const roots = { tributary: '/opt/app/dist/web', 'gpu-worker': '/opt/app/dist/gpu-worker' };

describe('app:// protocol', () => {
  it('serves files of the two bundles, / as the page', () => {
    expect(resolveAppUrl('app://tributary/', roots)).toBe(resolve('/opt/app/dist/web/index.html'));
    expect(resolveAppUrl('app://tributary/assets/index-abc.js?x=1#y', roots)).toBe(
      join(resolve('/opt/app/dist/web'), 'assets', 'index-abc.js'),
    );
    expect(resolveAppUrl('app://gpu-worker/index.html', roots)).toBe(
      resolve('/opt/app/dist/gpu-worker/index.html'),
    );
  });

  it('serves nothing outside them', () => {
    // The URL parser folds "." and ".." segments (also as %2e) before we see the path: still inside the root.
    for (const url of [
      'app://tributary/../gpu-worker/index.html',
      'app://tributary/%2e%2e/%2e%2e/etc/passwd',
    ]) {
      expect(resolveAppUrl(url, roots)?.startsWith(resolve('/opt/app/dist/web')), url).toBe(true);
    }
    for (const url of [
      'app://tributary/..%2f..%2fetc/passwd',
      'app://tributary/assets/%00.js',
      'app://tributary/%E0%A4%A',
      'app://other/index.html',
      'app://constructor/index.html',
      'app://__proto__/index.html',
      'file:///opt/app/dist/web/index.html',
      'https://tributary/index.html',
      'nonsense',
    ]) {
      expect(resolveAppUrl(url, roots), url).toBeNull();
    }
  });

  it('labels what it serves and sends a strict CSP', () => {
    expect(contentType('/x/index.html')).toMatch(/^text\/html/);
    expect(contentType('/x/a.JS')).toMatch(/^text\/javascript/);
    expect(contentType('/x/unknown.bin')).toBe('application/octet-stream');
    expect(APP_CSP).toContain("script-src 'self'");
    expect(APP_CSP).toContain("frame-ancestors 'none'");
    expect(APP_CSP).not.toContain('unsafe');
  });
});
