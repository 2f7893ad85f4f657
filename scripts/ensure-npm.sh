#!/usr/bin/env bash
# Installs the npm dependencies when they are missing or older than the lockfile. Electron's binary is not
# downloaded: the agent, the coordinator and every test run in plain Node and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

source scripts/ensure-node.sh

stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ] && node -e 'new (require("better-sqlite3"))(":memory:")' 2>/dev/null; then
  echo "npm dependencies: up to date"
  exit 0
fi
echo "npm dependencies: installing (about a minute)"
ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
