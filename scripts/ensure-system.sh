#!/usr/bin/env bash
# Makes sure the machine has what the GPU and browser tests need: a Vulkan driver Dawn accepts (Mesa 25
# lavapipe on a machine without a GPU) and Chromium. As root on Debian/Ubuntu it installs them; anywhere
# else it says exactly what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  exec bash scripts/install-system.sh
fi

missing=()
chromium_bin=${CHROMIUM_PATH:-/usr/bin/chromium}
[ -x "$chromium_bin" ] || missing+=("Chromium at $chromium_bin (apt-get install chromium, or set CHROMIUM_PATH)")
if ! ls /usr/share/vulkan/icd.d/*.json /etc/vulkan/icd.d/*.json >/dev/null 2>&1; then
  missing+=("a Vulkan driver (Debian 12: add bookworm-backports, then apt-get install -t bookworm-backports mesa-vulkan-drivers libvulkan1)")
fi
if [ ${#missing[@]} -gt 0 ]; then
  echo "The tests need, and this machine lacks:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "Run this script as root on Debian/Ubuntu to install them." >&2
  exit 1
fi
echo "system packages: present"
