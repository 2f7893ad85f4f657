import { describe, expect, it } from 'vitest';
import {
  denyAllPermissions,
  hardenContents,
  type HardenableContents,
} from '../../main/electron/hardening.js';
import {
  gpuWorkerWindowOptions,
  mainWindowOptions,
  webGpuSwitches,
} from '../../main/electron/window-options.js';

describe('window options', () => {
  it('isolate, sandbox and keep Node out of every window', () => {
    for (const options of [
      mainWindowOptions('/p/preload.cjs', '/a/icon.png'),
      gpuWorkerWindowOptions('/p/gpu.cjs'),
    ]) {
      expect(options.webPreferences).toMatchObject({
        contextIsolation: true,
        sandbox: true,
        nodeIntegration: false,
        nodeIntegrationInWorker: false,
        nodeIntegrationInSubFrames: false,
        webSecurity: true,
        allowRunningInsecureContent: false,
        webviewTag: false,
      });
    }
    expect(mainWindowOptions('/p/preload.cjs', '/a/icon.png').webPreferences?.preload).toBe('/p/preload.cjs');
  });

  it('keep the GPU worker hidden and unthrottled', () => {
    const options = gpuWorkerWindowOptions('/p/gpu.cjs');
    expect(options.show).toBe(false);
    expect(options.skipTaskbar).toBe(true);
    expect(options.webPreferences?.backgroundThrottling).toBe(false);
  });

  it('turn WebGPU on where Chromium ships it off (Linux) and nowhere else', () => {
    expect(webGpuSwitches('linux').map(([name]) => name)).toContain('enable-unsafe-webgpu');
    for (const platform of ['win32', 'darwin'] as const)
      expect(webGpuSwitches(platform).map(([name]) => name)).not.toContain('enable-unsafe-webgpu');
  });
});

type Listener = (event: { preventDefault(): void }, url: string) => void;

/** Stands in for WebContents: records listeners and the window-open handler so the test can fire them. */
function fakeContents() {
  const listeners = new Map<string, Listener>();
  let openHandler: ((details: { url: string }) => { action: 'deny' }) | null = null;
  const contents = {
    on(event: string, listener: Listener) {
      listeners.set(event, listener);
      return contents;
    },
    setWindowOpenHandler(handler: (details: { url: string }) => { action: 'deny' }) {
      openHandler = handler;
    },
  } as HardenableContents;
  const fire = (event: string, url = ''): boolean => {
    let prevented = false;
    listeners.get(event)?.({ preventDefault: () => (prevented = true) }, url);
    return prevented;
  };
  return { contents, fire, open: (url: string) => openHandler?.({ url }) };
}

describe('web contents hardening', () => {
  const isOwn = (url: string) => url.startsWith('app://tributary/');

  it('blocks navigation and redirects away from our pages', () => {
    const { contents, fire } = fakeContents();
    hardenContents(contents, isOwn, () => undefined);
    expect(fire('will-navigate', 'https://evil.example/')).toBe(true);
    expect(fire('will-redirect', 'file:///etc/passwd')).toBe(true);
    expect(fire('will-navigate', 'app://tributary/index.html')).toBe(false);
    expect(fire('will-attach-webview')).toBe(true);
  });

  it('denies every new window, handing https links to the system browser', () => {
    const opened: string[] = [];
    const { contents, open } = fakeContents();
    hardenContents(contents, isOwn, (url) => opened.push(url));
    expect(open('https://tributary.example/help')).toEqual({ action: 'deny' });
    expect(open('http://insecure.example/')).toEqual({ action: 'deny' });
    expect(open('file:///bin/sh')).toEqual({ action: 'deny' });
    expect(opened).toEqual(['https://tributary.example/help']);
  });

  it('refuses every permission request and check', () => {
    let request: ((c: unknown, p: string, cb: (granted: boolean) => void) => void) | null = null;
    let check: ((c: unknown, p: string) => boolean) | null = null;
    denyAllPermissions({
      setPermissionRequestHandler: (h) => (request = h),
      setPermissionCheckHandler: (h) => (check = h),
    });
    const answers: boolean[] = [];
    for (const permission of ['media', 'geolocation', 'notifications', 'clipboard-read', 'usb']) {
      request!(null, permission, (granted) => answers.push(granted));
      answers.push(check!(null, permission));
    }
    expect(answers.every((a) => a === false)).toBe(true);
    expect(answers).toHaveLength(10);
  });
});
