// Bundles the compiled CLI into dist/bin/ferry.js (the `ferry` command), with a chunk per command
// beside it (as deep in the tree as dist/src/*.js, so their paths to package.json agree):
//   npm run build
// One file per command instead of a hundred modules: Node resolves, reads and compiles each module
// it loads, which cost 60 ms of every ferry command's start here. The library (dist/src) is not
// bundled; packages stay in node_modules (koffi and zstd-napi load native code).
import { build } from 'esbuild';

await build({
  entryPoints: { ferry: 'dist/src/cli/main.js' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  packages: 'external',
  outdir: 'dist/bin',
  sourcemap: 'linked',
  logLevel: 'warning',
});
