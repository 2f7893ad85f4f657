/**
 * Dawn toggles for the engine (../shared/gpu-device/README.md): `shader-f16` on NVIDIA's Vulkan driver, which
 * Dawn hides unless asked; `chromium-experimental-subgroup-matrix` (tensor cores from WGSL), which it keeps
 * behind allow_unsafe_apis; and timestamps at full resolution for the GPU-time profile (Dawn rounds them
 * otherwise: on lavapipe a pass read as 0 ns). dawn.node takes them as they are; the Electron app passes the
 * same list to Chromium as switches (`dawnChromiumSwitches`). Kept apart from dawn.ts, which loads dawn.node,
 * so that Electron's main process can read the list without loading a second WebGPU.
 */
export const DAWN_TOGGLES = [
  'enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
  'disable-dawn-features=timestamp_quantization',
] as const;

/**
 * The toggles as Chromium command-line switches: dawn.node's `name=value` is Chromium's `--name=value`
 * (Electron's `app.commandLine.appendSwitch(name, value)`).
 */
export function dawnChromiumSwitches(
  toggles: readonly string[] = DAWN_TOGGLES,
): [name: string, value: string][] {
  return toggles.map((toggle) => {
    const at = toggle.indexOf('=');
    if (at <= 0 || at === toggle.length - 1) throw new Error(`a Dawn toggle is name=value, got ${toggle}`);
    return [toggle.slice(0, at), toggle.slice(at + 1)];
  });
}
