import { describe, expect, it } from 'vitest';
import { runSquareSmoke } from '../../gpu/smoke/square.js';
import { DRIVER_HINT, dawnGpu } from '../../main/gpu-host/dawn.js';

describe('GPU smoke through dawn.node (webgpu package)', () => {
  it('runs a compute shader and reads the result back', async () => {
    const result = await runSquareSmoke(dawnGpu(), DRIVER_HINT);
    console.log(`dawn.node adapter: ${result.adapter}`);
    expect(result.ok, `wrong values read back: ${result.sample.join(', ')}`).toBe(true);
  });
});
