#!/usr/bin/env bash
# The embedded default: a coordinator and local contributor nodes training a small GPT on a real corpus,
# all on this machine (`tributary local`). Extra arguments go to `tributary local`.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/ensure-node.sh

bash scripts/ensure-npm.sh
npm run --silent build:node
exec node bin/tributary.js local "$@"
