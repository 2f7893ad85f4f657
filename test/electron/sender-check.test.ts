import { describe, expect, it } from 'vitest';
import { isTrustedRendererFrame } from '../../main/electron/sender-check.js';

const top = (url: string) => ({ url, parent: null });

describe('IPC sender check', () => {
  it('trusts the top frame of our bundle, on any of its paths', () => {
    expect(isTrustedRendererFrame(top('app://tributary/index.html'))).toBe(true);
    expect(isTrustedRendererFrame(top('app://tributary/index.html#/settings'))).toBe(true);
  });

  it('refuses other origins, schemes, look-alike hosts, iframes, and frames that are gone', () => {
    for (const url of [
      'app://gpu-worker/index.html',
      'https://tributary/index.html',
      'file:///opt/Tributary/resources/app.asar/dist/web/index.html',
      'app://tributary.evil.example/index.html',
      'app://evil.example/tributary',
      'http://127.0.0.1:7733/',
      'about:blank',
      'not a url',
      '',
    ]) {
      expect(isTrustedRendererFrame(top(url)), url).toBe(false);
    }
    expect(isTrustedRendererFrame({ url: 'app://tributary/index.html', parent: {} })).toBe(false);
    expect(isTrustedRendererFrame(null)).toBe(false);
    expect(isTrustedRendererFrame(undefined)).toBe(false);
  });
});
