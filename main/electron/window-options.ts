import type { BrowserWindowConstructorOptions, WebPreferences } from 'electron';
import { dawnChromiumSwitches } from '../gpu-host/dawn-toggles.js';

/** Electron's security checklist, in one place, for every window we open. */
export const HARDENED_WEB_PREFERENCES: WebPreferences = {
  contextIsolation: true,
  sandbox: true,
  nodeIntegration: false,
  nodeIntegrationInWorker: false,
  nodeIntegrationInSubFrames: false,
  webSecurity: true,
  allowRunningInsecureContent: false,
  experimentalFeatures: false,
  webviewTag: false,
  navigateOnDragDrop: false,
  spellcheck: false,
};

export function mainWindowOptions(preload: string, icon: string): BrowserWindowConstructorOptions {
  return {
    title: 'Tributary',
    width: 1120,
    height: 820,
    minWidth: 520,
    minHeight: 480,
    show: false,
    icon,
    autoHideMenuBar: true,
    webPreferences: { ...HARDENED_WEB_PREFERENCES, preload },
  };
}

/**
 * The hidden window the engine runs in. Never shown; kept running in the background, since Chromium
 * throttles timers (and so the training loop) of hidden pages otherwise.
 */
export function gpuWorkerWindowOptions(preload: string): BrowserWindowConstructorOptions {
  return {
    show: false,
    width: 320,
    height: 240,
    skipTaskbar: true,
    focusable: false,
    webPreferences: { ...HARDENED_WEB_PREFERENCES, preload, backgroundThrottling: false },
  };
}

/**
 * Chromium switches the GPU worker needs. WebGPU is on by default on Windows and macOS; Chromium on Linux
 * still ships it behind a flag, and there it runs on Vulkan. On every platform, the engine's Dawn toggles
 * (f16 and tensor cores where Dawn hides them, unrounded timestamps), the same list dawn.node gets.
 */
export function webGpuSwitches(platform: NodeJS.Platform): [name: string, value?: string][] {
  const linux: [string, string?][] = [['enable-unsafe-webgpu'], ['enable-features', 'Vulkan']];
  return [...(platform === 'linux' ? linux : []), ...dawnChromiumSwitches()];
}
