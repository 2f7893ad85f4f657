import { create, globals } from 'webgpu';
import { DAWN_TOGGLES } from './dawn-toggles.js';

/** What to install when dawn.node finds no adapter, per platform. */
export const DRIVER_HINT =
  process.platform === 'linux'
    ? 'dawn.node needs a Vulkan driver. On Debian 12 add the bookworm-backports suite and run ' +
      '`apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1` (Mesa 25 lavapipe works; ' +
      "Debian 12's own Mesa 22 is refused by Dawn), or install your GPU vendor's Vulkan driver."
    : process.platform === 'win32'
      ? 'dawn.node needs a Direct3D 12 capable GPU driver.'
      : 'dawn.node needs Metal (macOS 11 or later).';

let installed = false;

/**
 * Every GPU object handed out, kept reachable for the life of the process: when dawn.node's GPU instance is
 * garbage-collected while its devices still run, the process crashes (futex/mutex aborts, SIGSEGV).
 */
const instances: GPU[] = [];

/**
 * The `navigator.gpu` of plain Node, from dawn.node. Also installs the WebGPU enums (GPUBufferUsage, ...) as
 * globals, since the engine uses them as a browser page would.
 */
export function dawnGpu(flags: readonly string[] = DAWN_TOGGLES): GPU {
  if (!installed) {
    Object.assign(globalThis, globals);
    installed = true;
  }
  const gpu = create([...flags]);
  instances.push(gpu);
  return gpu;
}
