/** The device went away (driver reset, device.destroy(), GPU unplugged); the host may recreate it. */
export class DeviceLostError extends Error {
  constructor(
    readonly reason: string,
    detail: string,
  ) {
    super(`WebGPU device lost (${reason}): ${detail || 'no message'}`);
    this.name = 'DeviceLostError';
  }
}

/** Follows device.lost so every GPU call of an engine object can fail with a {@link DeviceLostError}. */
export class DeviceWatch {
  private info: GPUDeviceLostInfo | null = null;

  constructor(readonly device: GPUDevice) {
    void device.lost.then((info) => {
      this.info = info;
    });
  }

  get isLost(): boolean {
    return this.info !== null;
  }

  /** Throws if the device is already known to be lost. */
  check(): void {
    if (this.info) throw new DeviceLostError(this.info.reason, this.info.message);
  }

  /**
   * Awaits a GPU promise (mapAsync, onSubmittedWorkDone); a rejection on a lost device becomes a
   * DeviceLostError. device.lost may settle just after the failing call, so a rejection waits one tick for it.
   */
  async guard<T>(work: Promise<T>): Promise<T> {
    try {
      const value = await work;
      this.check();
      return value;
    } catch (error) {
      if (error instanceof DeviceLostError) throw error;
      await Promise.race([this.device.lost, new Promise((r) => setTimeout(r, 50))]);
      if (this.info) throw new DeviceLostError(this.info.reason, this.info.message);
      throw error;
    }
  }
}
