// The entry point of ferry's startup snapshot: scripts/bundle.ts bundles it into one CommonJS file
// and has Node run it with --build-snapshot, which keeps the heap it leaves as dist/bin/ferry.blob.
// dist/bin/ferry (the `ferry` command) starts Node from that blob: the commands' code is there
// loaded and compiled, 30-60 ms less per command than Node reading, compiling and running it.
// Nothing native is loaded into a snapshot: src/sys loads koffi on its first call.
import { dirname } from 'node:path';
import { pathToFileURL } from 'node:url';
import { setFlagsFromString, startupSnapshot } from 'node:v8';
import { startup } from './command.js';
import { loadSnapshotCommands, runCli } from './main.js';

/** The bundle's URL, which stands for import.meta.url in it (see scripts/bundle.ts). */
const bundle = globalThis as { ferryBundleUrl?: string };

// Compiled now, every function of theirs is in the snapshot compiled: nothing is compiled at first
// call, while a process is frozen.
setFlagsFromString('--no-lazy');
void loadSnapshotCommands().then(() => {
  setFlagsFromString('--lazy');
  startupSnapshot.setDeserializeMainFunction(() => {
    // Where the blob is now (the bundle beside it finds packages from there).
    const at = process.execArgv.indexOf('--snapshot-blob');
    const blob = at < 0 ? undefined : process.execArgv[at + 1];
    if (blob) bundle.ferryBundleUrl = pathToFileURL(`${dirname(blob)}/ferry.cjs`).href;
    startup.fromSnapshot = true;
    runCli(process.argv.slice(1));
  });
});
