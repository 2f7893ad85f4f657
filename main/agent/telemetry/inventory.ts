import si from 'systeminformation';
import type { Inventory } from '../../../shared/dashboard/contract.js';

/**
 * What the machine has, read once at start. systeminformation shells out synchronously for some GPU data,
 * so it is used for this one-off inventory only, never for live readings.
 */
export async function readInventory(): Promise<Inventory> {
  const [graphics, cpu, mem] = await Promise.all([si.graphics(), si.cpu(), si.mem()]);
  return {
    gpus: graphics.controllers.map((c) => ({
      vendor: c.vendor,
      model: c.model,
      vramMb: typeof c.vram === 'number' && c.vram > 0 ? c.vram : null,
    })),
    cpu: `${cpu.manufacturer} ${cpu.brand}`.trim(),
    cores: cpu.cores,
    memoryMb: Math.round(mem.total / 1e6),
  };
}
