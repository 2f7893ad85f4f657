/**
 * The subgroup size when the device runs subgroups as a CPU's SIMD lanes (a fallback adapter such as lavapipe
 * or SwiftShader, with the `subgroups` feature enabled and one fixed size), else null. On such adapters a load
 * whose address differs between lanes costs a loop over the lanes while subgroupBroadcast is a register
 * shuffle, so the "lanes" kernels load each value once per subgroup and broadcast it. Real GPUs keep the
 * workgroup-memory kernels, which suit them.
 */
export function cpuSubgroupLanes(device: GPUDevice): number | null {
  const info = device.adapterInfo as GPUAdapterInfo | undefined;
  if (!info?.isFallbackAdapter || !device.features.has('subgroups')) return null;
  const { subgroupMinSize: min, subgroupMaxSize: max } = info;
  return min !== undefined && min === max ? min : null;
}
