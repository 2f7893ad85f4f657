#!/usr/bin/env bash
# Installs the system packages the tests need on Debian 12 (run as root): Mesa lavapipe from
# bookworm-backports (Debian 12's own Mesa 22 lavapipe is refused by Dawn) and Chromium for the
# browser-side WebGPU and UI tests.
set -euo pipefail
export DEBIAN_FRONTEND=noninteractive

need_install() {
  ! { [ -x /usr/bin/chromium ] && ls /usr/share/vulkan/icd.d/lvp_icd*.json >/dev/null 2>&1 \
      && dpkg-query -W -f='${Version}' mesa-vulkan-drivers 2>/dev/null | grep -q '^2[5-9]'; }
}

if ! need_install; then
  echo "system packages: already installed"
  exit 0
fi

src=/etc/apt/sources.list.d/debian.sources
if [ -f "$src" ] && ! grep -q bookworm-backports "$src" /etc/apt/sources.list.d/*.sources 2>/dev/null; then
  # Same URIs and key as the existing Debian source, one more suite.
  uris=$(awk '/^URIs:/{print $2; exit}' "$src")
  key=$(awk '/^Signed-By:/{print $2; exit}' "$src")
  printf 'Types: deb\nURIs: %s\nSuites: bookworm-backports\nComponents: main\nSigned-By: %s\n' \
    "$uris" "$key" > /etc/apt/sources.list.d/bookworm-backports.sources
elif [ ! -f "$src" ] && ! grep -rqs bookworm-backports /etc/apt/sources.list /etc/apt/sources.list.d/; then
  echo 'deb http://deb.debian.org/debian bookworm-backports main' > /etc/apt/sources.list.d/bookworm-backports.list
fi

apt-get update -qq
apt-get install -y -qq -t bookworm-backports mesa-vulkan-drivers libvulkan1
apt-get install -y -qq chromium fonts-dejavu-core
echo "system packages: installed"
