// ferry's startup snapshot. scripts/bundle.ts bundles this module and what it imports into one
// CommonJS file, dist/bin/ferry.cjs, and has Node build a snapshot with a script that compiles that
// file eagerly (no function is left to compile at its first call, not even while a process is
// frozen) and calls prepareSnapshot(). The heap it leaves is dist/bin/ferry.blob, from which
// dist/bin/ferry (the `ferry` command) starts Node: the commands' code is there, loaded and
// compiled. Nothing native is loaded into a snapshot: src/sys loads koffi on its first call.
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { startupSnapshot } from 'node:v8';
import { startup } from './command.js';
import { loadSnapshotCommands, runCli } from './main.js';

/** The bundle's URL, which stands for import.meta.url in it (see scripts/bundle.ts). */
const bundle = globalThis as { ferryBundleUrl?: string };

/** Load the commands into the heap being snapshotted, and say what runs when Node starts from it. */
export async function prepareSnapshot(): Promise<void> {
  await loadSnapshotCommands();
  startupSnapshot.setDeserializeMainFunction(() => {
    // Where the blob is now (the bundle beside it finds packages from there).
    const at = process.execArgv.indexOf('--snapshot-blob');
    const blob = at < 0 ? undefined : process.execArgv[at + 1];
    if (blob) bundle.ferryBundleUrl = pathToFileURL(`${dirname(blob)}/ferry.cjs`).href;
    startup.fromSnapshot = true;
    runCli(process.argv.slice(1));
  });
}
