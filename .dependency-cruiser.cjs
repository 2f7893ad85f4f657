/**
 * The layer rules of the README's Architecture table. `npm run lint` fails on any import that points up or
 * sideways. test/lint/boundaries.test.ts runs this config against fixtures with wrong-way imports.
 */
// Fixtures under test/fixtures/boundaries/ mirror the real layers so the rules can be proven to fire.
const layer = (name) => `^(?:test/fixtures/boundaries/)?${name}/`;

/** @type {import('dependency-cruiser').IConfiguration} */
module.exports = {
  forbidden: [
    {
      name: 'renderer-only-shared',
      comment: 'renderer/ runs in a sandboxed page: it may import shared/ and npm packages only.',
      severity: 'error',
      from: { path: layer('renderer') },
      to: { path: `${layer('(gpu|main|coordinator)')}`, pathNot: 'node_modules' },
    },
    {
      name: 'shared-imports-nothing-of-ours',
      severity: 'error',
      from: { path: layer('shared') },
      to: { path: layer('(gpu|main|coordinator|renderer)'), pathNot: 'node_modules' },
    },
    {
      name: 'gpu-only-shared',
      severity: 'error',
      from: { path: layer('gpu') },
      to: { path: layer('(main|coordinator|renderer)'), pathNot: 'node_modules' },
    },
    {
      name: 'coordinator-not-main-or-renderer',
      severity: 'error',
      from: { path: layer('coordinator') },
      to: { path: layer('(main|renderer)'), pathNot: 'node_modules' },
    },
    {
      name: 'main-not-coordinator-or-renderer',
      comment:
        'main/ hosts the agent; the coordinator is a separate server and the renderer a separate bundle.',
      severity: 'error',
      from: { path: layer('main'), pathNot: '^main/cli/' },
      to: { path: layer('(coordinator|renderer)'), pathNot: 'node_modules' },
    },
    {
      name: 'electron-only-in-main',
      severity: 'error',
      from: { pathNot: layer('main') },
      to: { path: '^(?:node_modules/)?electron(?:/|$)' },
    },
    {
      name: 'product-not-tests-or-scripts',
      severity: 'error',
      from: { path: '^(shared|gpu|main|coordinator|renderer)/' },
      to: { path: '^(test|scripts)/' },
    },
    {
      name: 'no-circular',
      severity: 'error',
      from: {},
      to: { circular: true },
    },
  ],
  options: {
    doNotFollow: { path: 'node_modules' },
    tsPreCompilationDeps: true,
    tsConfig: { fileName: 'tsconfig.json' },
    enhancedResolveOptions: {
      exportsFields: ['exports'],
      conditionNames: ['import', 'require', 'node', 'default'],
      extensions: ['.ts', '.tsx', '.js', '.json'],
    },
    exclude: { path: '^dist/' },
  },
};
