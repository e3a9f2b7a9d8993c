// Builds the `ferry` command from the compiled CLI (npm run build):
//   dist/bin/ferry.js + chunks   an ES module bundle, a chunk per command loaded as it runs (as deep
//                                in the tree as dist/src/*.js, so their paths to package.json agree)
//   dist/bin/ferry.cjs           the whole CLI in one CommonJS file, for the startup snapshot
//   dist/bin/ferry-snapshot-builder.cjs   the script that builds the snapshot from it
//   dist/bin/ferry.blob          Node's startup snapshot of it (src/cli/snapshot.ts), with
//   dist/bin/ferry.blob.node     a stamp bearing the modification time of the Node that made it
//   dist/bin/ferry-restore.cjs, ferry-restore.blob (and dump's)   one command alone, bundled and
//                                snapshotted the same way: a smaller heap, a faster start
//                                (every blob without the code cache of the builtins it holds
//                                loaded, restore's without any: scripts/snapshot-blob.ts)
//   dist/bin/ferry               the command: the Node that made the snapshot started from it,
//                                or, when that Node changed, ferry.js
// One file instead of a hundred modules (Node resolves, reads and compiles each module it loads:
// 60 ms of every command's start here), and a snapshot instead of loading even that (30-60 ms
// more). The library (dist/src) is not bundled; packages stay in node_modules (native code).
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { relative, resolve } from 'node:path';
import { NATIVE_BINARIES } from '../src/sys/packages.js';
import { withoutCodeCache } from './snapshot-blob.js';

const OUT = 'dist/bin';

// The native binaries as installed now, relative to the bundles, for src/sys/packages.ts to open
// without the module loader.
const resolveHere = createRequire(import.meta.url).resolve;
const natives = Object.fromEntries(
  Object.entries(NATIVE_BINARIES).flatMap(([key, name]) => {
    try {
      return [[key, relative(resolve(OUT), resolveHere(name))]];
    } catch {
      return []; // not installed (another platform): the package's entry point is used
    }
  }),
);
const NATIVES = `globalThis.ferryNatives = ${JSON.stringify(natives)};`;

const common = {
  bundle: true,
  platform: 'node',
  target: 'node20',
  packages: 'external',
  logLevel: 'warning',
} as const;

/**
 * Commands with a startup snapshot of their own besides the whole command line's (their modules'
 * exports): those whose start counts most. A restore's time is the time until the process runs
 * again; a dump's wall time is a migration's by hand. A smaller heap starts faster (restore's is
 * 0.6 MB of the 5.9, 3-5 ms of its start here).
 */
const COMMAND_SNAPSHOTS = {
  dump: { command: 'dumpCommand', v8: [], codeCache: true },
  restore: {
    command: 'restoreCommand',
    v8: ['--no-rehash-snapshot', '--min-semi-space-size=8', '--no-opt', '--no-sparkplug'],
    codeCache: false,
  },
} as const;
// V8's flags for a command's snapshot, given both as it is made and at every start from it (V8
// refuses a snapshot made with other flags). --no-rehash-snapshot: V8 keeps the hash seed drawn
// when the blob was made instead of drawing one and rehashing every table in the heap, 3-5 ms of
// restore's start here. A seed that stays the same guards less against input made to collide in
// hash tables; a restore's input is the image it is asked to run as a process.
// --min-semi-space-size=8 (MiB): what a restore allocates fits in the young generation, where it
// took one scavenge of 0.8 ms (--trace-gc) in the default 1 MiB; the start is no slower.
// --no-opt --no-sparkplug: no compiling of the bytecode to machine code, which a command that runs
// for tens of milliseconds does not earn back (Sparkplug compiles on the main thread, TurboFan on a
// thread that takes a CPU from the page copies). restore --help started in 35.6 ms instead of 37.9
// (--no-opt alone) and 37.7 (neither), and a 64 MiB restore took 37.8 ms of its own instead of
// 40.8 and 44.1 (interleaved runs, 40 and 21 of each). Its JavaScript is bookkeeping: what grows
// with the process (its pages) is copied by the kernel.
// `codeCache: false`: the blob keeps no builtin's code cache, not even of those its heap has not
// loaded. A restore loads no builtin after its start (process.moduleLoadList says so), so none is
// read, and a builtin loaded all the same (on some error path) is compiled from its source.

// What an earlier build left goes (chunks are named by their content).
rmSync(OUT, { recursive: true, force: true });

await build({
  ...common,
  entryPoints: { ferry: 'dist/src/cli/ferry.js' },
  outdir: OUT,
  splitting: true,
  format: 'esm',
  sourcemap: 'linked',
  banner: { js: NATIVES },
});

// import.meta.url has no CommonJS equivalent: the bundle's own URL stands for it, which the
// snapshot sets again as it starts, wherever the blob is then.
const cjs = {
  ...common,
  format: 'cjs',
  define: { 'import.meta.url': 'globalThis.ferryBundleUrl' },
  // (Strict first: esbuild's own "use strict" comes after the banner, where it is no directive.)
  banner: {
    js: `'use strict';\nglobalThis.ferryBundleUrl = require('node:url').pathToFileURL(__filename).href;\n${NATIVES}`,
  },
} as const;
await build({ ...cjs, entryPoints: ['dist/src/cli/snapshot.js'], outfile: `${OUT}/ferry.cjs` });
for (const [name, { command }] of Object.entries(COMMAND_SNAPSHOTS)) {
  const bundle = `ferry-${name}.cjs`;
  await build({
    ...cjs,
    stdin: {
      contents: [
        `import { prepareCommandSnapshot } from './run.js';`,
        `import { ${command} } from './${name}-command.js';`,
        `export const prepareSnapshot = () => prepareCommandSnapshot(${command}, '${bundle}');`,
      ].join('\n'),
      resolveDir: 'dist/src/cli',
      sourcefile: bundle,
    },
    outfile: `${OUT}/${bundle}`,
  });
}

// A snapshot is built by a script that compiles its bundle with --no-lazy (a flag given to Node
// itself would be needed at every start too, which slows Node's own start), runs it as Node runs
// a CommonJS module, and has it load the commands.
const BUILDER = `'use strict';
const { readFileSync, writeFileSync } = require('node:fs');
const { setFlagsFromString } = require('node:v8');
const { Script } = require('node:vm');
const file = require('node:path').join(__dirname, process.env.FERRY_SNAPSHOT_BUNDLE);
setFlagsFromString('--no-lazy');
const source = '(function (exports, require, module, __filename, __dirname) {' + readFileSync(file, 'utf8') + '\\n})';
const module_ = { exports: {} };
new Script(source, { filename: file }).runInThisContext()(module_.exports, require, module_, file, __dirname);
setFlagsFromString('--lazy');
module_.exports
  .prepareSnapshot()
  .then(() => {
    // The builtin modules the heap now holds loaded (see scripts/snapshot-blob.ts).
    const loaded = process.moduleLoadList.filter((m) => m.startsWith('NativeModule ')).map((m) => m.slice(13));
    writeFileSync(process.env.FERRY_SNAPSHOT_LOADED, loaded.join('\\n'));
  })
  .catch((err) => {
    console.error(err);
    process.exitCode = 1;
  });
`;
writeFileSync(`${OUT}/ferry-snapshot-builder.cjs`, BUILDER);

/**
 * Build `name`.blob from `name`.cjs, without the code cache of the builtins it holds loaded (or
 * of any, without `codeCache`); false (and no blob) if Node cannot.
 */
function snapshot(name: string, v8: readonly string[] = [], codeCache = true): boolean {
  const blob = `${OUT}/${name}.blob`;
  const loaded = `${OUT}/${name}.loaded`;
  try {
    execFileSync(
      process.execPath,
      [
        '--no-warnings',
        ...v8,
        '--snapshot-blob',
        blob,
        '--build-snapshot',
        `${OUT}/ferry-snapshot-builder.cjs`,
      ],
      {
        stdio: 'inherit',
        env: { ...process.env, FERRY_SNAPSHOT_BUNDLE: `${name}.cjs`, FERRY_SNAPSHOT_LOADED: loaded },
      },
    );
    const held = new Set(readFileSync(loaded, 'utf8').split('\n'));
    const trimmed = withoutCodeCache(readFileSync(blob), (id) => !codeCache || held.has(id));
    if (trimmed) writeFileSync(blob, trimmed);
    else process.stderr.write(`bundle: ${name}.blob keeps its whole code cache (no layout ferry knows)\n`);
  } catch (err) {
    rmSync(blob, { force: true });
    process.stderr.write(
      `bundle: no startup snapshot ${name}.blob (${err instanceof Error ? err.message : String(err)})\n`,
    );
    return false;
  } finally {
    rmSync(loaded, { force: true });
  }
  return true;
}

// Without the whole command line's snapshot the command runs the bundle: slower to start, the
// same otherwise. Without a command's own, that command starts from the whole one.
if (snapshot('ferry')) {
  for (const [name, { v8, codeCache }] of Object.entries(COMMAND_SNAPSHOTS))
    snapshot(`ferry-${name}`, v8, codeCache);
  writeFileSync(`${OUT}/ferry.blob.node`, `${process.execPath} ${process.version}\n`);
  execFileSync('touch', ['-r', process.execPath, `${OUT}/ferry.blob.node`]);
} else {
  process.stderr.write('bundle: ferry starts without a startup snapshot\n');
}

// The command runs the Node that made the snapshots (a snapshot works with no other), while that
// Node is unchanged: ferry.blob.node bears its modification time. Otherwise, the node on PATH runs
// the bundle. No program is started on the way but readlink for a symlinked command (npm link).
const LAUNCHER = `#!/bin/sh
# ferry: Node started from ferry's startup snapshot, else the bundle (see scripts/bundle.ts).
node='${process.execPath.replaceAll("'", "'\\''")}'
self=$0
if [ -L "$self" ]; then self=$(readlink -f -- "$self"); fi
case $self in */*) here=\${self%/*} ;; *) here=. ;; esac
stamp=$here/ferry.blob.node
blob=$here/ferry.blob
v8=
case $1 in
${Object.entries(COMMAND_SNAPSHOTS)
  .map(
    ([name, { v8 }]) =>
      `  ${name}) if [ -f "$here/ferry-${name}.blob" ]; then blob=$here/ferry-${name}.blob; v8='${v8.join(' ')}'; fi ;;`,
  )
  .join('\n')}
esac
if [ -f "$blob" ] && [ ! "$node" -nt "$stamp" ] && [ ! "$node" -ot "$stamp" ]; then
  exec "$node" $v8 --snapshot-blob "$blob" -- "$@"
fi
exec node "$here/ferry.js" "$@"
`;
writeFileSync(`${OUT}/ferry`, LAUNCHER);
chmodSync(`${OUT}/ferry`, 0o755);
