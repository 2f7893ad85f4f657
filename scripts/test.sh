#!/usr/bin/env bash
# The one test command: installs what the tests need, then type-checks, lints, builds and runs every test
# (unit, GPU on lavapipe, network on 127.0.0.1, end-to-end in Chromium).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-node.sh

bash scripts/ensure-system.sh
bash scripts/ensure-npm.sh

echo "== typecheck"; npm run --silent typecheck
echo "== lint"; npm run --silent lint
echo "== build"; npm run --silent build
echo "== tests"
report=$(mktemp)
status=0
npx vitest run --reporter=default --reporter=json --outputFile.json="$report" "$@" || status=$?
node scripts/test-summary.mjs "$report"
rm -f "$report"
exit $status
