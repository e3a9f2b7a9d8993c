// ferry's startup snapshot. scripts/bundle.ts bundles this module and what it imports into one
// CommonJS file, dist/bin/ferry.cjs, and has Node build a snapshot with a script that compiles that
// file eagerly (no function is left to compile at its first call, not even while a process is
// frozen) and calls prepareSnapshot(). The heap it leaves is dist/bin/ferry.blob, from which
// dist/bin/ferry (the `ferry` command) starts Node: the commands' code is there, loaded and
// compiled. Nothing native is loaded into a snapshot: src/sys loads koffi on its first call.
// (The commands whose start matters most have a snapshot each as well: prepareCommandSnapshot().)
import { loadSnapshotCommands, runCli } from './main.js';
import { runFromSnapshot } from './run.js';

/** Load the commands into the heap being snapshotted, and say what runs when Node starts from it. */
export async function prepareSnapshot(): Promise<void> {
  await loadSnapshotCommands();
  runFromSnapshot('ferry.cjs', runCli);
}
