import { describe, expect, it } from 'vitest';
import { webGpuSwitches } from '../../main/electron/window-options.js';
import { DAWN_TOGGLES, dawnChromiumSwitches } from '../../main/gpu-host/dawn-toggles.js';

/** Chromium's switch `--name=value` as Electron's appendSwitch(name, value) writes it on the command line. */
const commandLine = (switches: [string, string?][]): string[] =>
  switches.map(([name, value]) => (value === undefined ? `--${name}` : `--${name}=${value}`));

describe("the Electron GPU worker's Dawn toggles", () => {
  it('are the toggles dawn.node gets, as Chromium switches', () => {
    expect(commandLine(dawnChromiumSwitches())).toEqual(DAWN_TOGGLES.map((t) => `--${t}`));
    expect(commandLine(dawnChromiumSwitches())).toEqual([
      '--enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
      '--disable-dawn-features=timestamp_quantization',
    ]);
  });

  it.each(['linux', 'win32', 'darwin'] as const)('are appended on %s', (platform) => {
    const line = commandLine(webGpuSwitches(platform));
    for (const toggle of DAWN_TOGGLES) expect(line).toContain(`--${toggle}`);
  });

  it('refuse a toggle that is not name=value', () => {
    expect(() => dawnChromiumSwitches(['allow_unsafe_apis'])).toThrow(/name=value/);
    expect(() => dawnChromiumSwitches(['enable-dawn-features='])).toThrow(/name=value/);
  });
});
