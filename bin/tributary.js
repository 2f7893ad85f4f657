#!/usr/bin/env node
// The `tributary` command of a checkout (package.json "bin", also what `npm start` runs). It picks a Node.js
// the project supports, runs the built CLI (dist/) or, before a build, the TypeScript sources through tsx,
// and keeps Dawn's start-up notes off the terminal. Plain JavaScript on purpose: it must run before any build
// and on the older Node it may have to replace.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const args = process.argv.slice(2);

function nodeToUse() {
  if (Number(process.versions.node.split('.')[0]) >= 24) return process.execPath;
  // scripts/ensure-node.sh (run by npm start and npm test) fetches Node 24 here where the machine's is older.
  const local = join(root, '.tools', 'node', 'bin', 'node');
  if (existsSync(local)) return local;
  console.error(
    `tributary needs Node.js 24 or later; this is ${process.version}. Run \`npm start\` once in ${root} ` +
      '(it fetches Node 24 into .tools/node), or install Node 24 from nodejs.org.',
  );
  process.exit(1);
}

function entry() {
  const built = join(root, 'dist', 'main', 'cli', 'index.js');
  if (existsSync(built)) return [built];
  // tsx from this checkout, whatever directory the command runs in.
  const tsx = join(root, 'node_modules', 'tsx', 'dist', 'loader.mjs');
  if (existsSync(tsx)) return ['--import', pathToFileURL(tsx).href, join(root, 'main', 'cli', 'index.ts')];
  console.error(`tributary is not installed yet: run \`npm install\` (or \`npm start\`) in ${root} first.`);
  process.exit(1);
}

/**
 * dawn.node prints these two lines to stderr from native code each time it opens an adapter on software
 * Vulkan (lavapipe): Dawn lowering a limit to what it supports, nothing a person can act on.
 */
const dawnNote = /^Warning: maxDynamic(Uniform|Storage)BuffersPerPipelineLayout artificially reduced /;

const node = nodeToUse();
// Its own process group, so a Ctrl-C reaches the CLI once (forwarded below), never twice.
const child = spawn(node, [...entry(), ...args], {
  cwd: process.cwd(),
  stdio: ['ignore', 'inherit', 'pipe', 'ipc'],
  detached: true,
});
let pending = '';
child.stderr.setEncoding('utf8');
child.stderr.on('data', (chunk) => {
  const lines = (pending + chunk).split('\n');
  pending = lines.pop();
  const kept = lines.filter((line) => !dawnNote.test(line));
  if (kept.length > 0) process.stderr.write(`${kept.join('\n')}\n`);
});
for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP']) process.on(signal, () => child.kill(signal));
// npm exec (npx) runs this through `sh -c` and, on SIGTERM, exits without passing the signal on: when the
// npm process that started us goes away, stop the CLI as if signalled, instead of training on unseen.
if (process.env.npm_command) {
  const parent = process.ppid;
  const watch = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(watch);
    child.kill('SIGTERM');
  }, 1000).unref();
}
child.on('close', (code, signal) => {
  if (pending && !dawnNote.test(pending)) process.stderr.write(pending);
  process.exit(code ?? 128 + (constants.signals[signal] ?? 0));
});
