#!/usr/bin/env bash
# Installs the npm dependencies when they are missing or older than the lockfile. Electron's binary is not
# downloaded: the agent, the coordinator and every test run in plain Node and Chromium.
set -euo pipefail
cd "$(dirname "$0")/.."

node -e 'const [a,b]=process.versions.node.split(".").map(Number); if (a<20||(a===20&&b<19)) { console.error(`Node ${process.versions.node} is too old: Tributary needs Node 20.19 or later.`); process.exit(1); }'

stamp=node_modules/.package-lock.json
if [ -f "$stamp" ] && [ "$stamp" -nt package-lock.json ] && [ -f node_modules/better-sqlite3/build/Release/better_sqlite3.node ]; then
  echo "npm dependencies: up to date"
  exit 0
fi
echo "npm dependencies: installing (compiles better-sqlite3, about 2 minutes on 2 cores)"
ELECTRON_SKIP_BINARY_DOWNLOAD=1 npm ci --no-audit --no-fund
