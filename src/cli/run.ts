// Running one command: its arguments parsed and checked, its errors made one line and an exit code.
// Shared by the whole command line (main.ts) and the startup snapshots that hold one command alone,
// which start here too.
import { dirname } from 'node:path';
import { Writable } from 'node:stream';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { setFlagsFromString, startupSnapshot } from 'node:v8';
import { runInNewContext } from 'node:vm';
import { FerryError } from '../errors.js';
import { exitNowIfLoaded } from '../sys/signal.js';
import { COMMON_OPTIONS, printJson, startup, type Command } from './command.js';

/**
 * Commands that freeze a process, or hold one for a migration: their code is compiled as it loads
 * (the startup snapshots hold the others' compiled).
 */
const FREEZERS = new Set(['dump', 'migrate', 'agent']);

const EXIT_FAILURE = 1;
const EXIT_USAGE = 2;

export function commandHelp(c: Command): string {
  return `usage: ${c.usage}\n\n${c.summary}`;
}

/** Before loading command `name`: what a command that freezes processes needs of V8. */
export function prepareFor(name: string): void {
  if (!FREEZERS.has(name)) return;
  // What a dump runs while the process is frozen is compiled now, before: compiled lazily, at
  // first call, it cost 8-10 ms of a small dump's 20 (and no more time in all).
  setFlagsFromString('--no-lazy');
  // The process is ferry's own: a dump after pre-copy rounds may collect garbage just before it
  // freezes (checkpoint.ts).
  setFlagsFromString('--expose-gc');
  globalThis.gc ??= runInNewContext('gc') as NodeJS.GCFunction;
}

/** Run `command` (loaded after prepareFor()) on its arguments `args`; returns the exit code. */
export async function runCommand(command: Command, args: string[]): Promise<number> {
  setFlagsFromString('--lazy');
  let parsed;
  try {
    parsed = parseArgs({
      args,
      options: { ...COMMON_OPTIONS, ...command.options },
      allowPositionals: true,
    });
  } catch (err) {
    throw new FerryError('FERRY_USAGE', `${(err as Error).message}\nusage: ${command.usage}`);
  }
  if (parsed.values.help) {
    process.stdout.write(`${commandHelp(command)}\n`);
    return 0;
  }
  const n = parsed.positionals.length;
  if (n < command.positionals.min || n > command.positionals.max) {
    throw new FerryError('FERRY_USAGE', `wrong number of arguments\nusage: ${command.usage}`);
  }
  return command.run(parsed);
}

function report(err: unknown, argv: string[]): number {
  const debug = argv.includes('--debug');
  const code = err instanceof FerryError ? err.code : 'FERRY_INTERNAL';
  const message = err instanceof Error ? err.message : String(err);
  if (argv.includes('--json')) printJson({ error: { code, message } });
  else process.stderr.write(`ferry: ${message}${err instanceof FerryError ? '' : ` [${code}]`}\n`);
  if (debug && err instanceof Error) process.stderr.write(`${err.stack}\n`);
  else if (!(err instanceof FerryError))
    process.stderr.write('ferry: this is a bug; run with --debug for details\n');
  return code === 'FERRY_USAGE' ? EXIT_USAGE : EXIT_FAILURE;
}

/**
 * Run `main` on the command line `argv` (without node and script), then end the process with its
 * exit code, or its error's.
 */
export function runToExit(argv: string[], main: (argv: string[]) => Promise<number>): void {
  // A reader that goes away (`ferry inspect 1 | head`) ends the output, not in a stack trace.
  process.stdout.on('error', (err: NodeJS.ErrnoException) => {
    if (err.code !== 'EPIPE') throw err;
    process.exit(process.exitCode ?? 0);
  });
  let settled = false;
  // An event loop that empties while the command has not finished (a step that will never
  // complete) must not end in exit 0 as if it had.
  process.once('beforeExit', () => {
    if (!settled) {
      const err = new FerryError('FERRY_INTERNAL', `ferry ${argv[0] ?? ''} stopped before it finished`);
      exitWith(report(err, argv));
    }
  });
  main(argv).then(
    (code) => {
      settled = true;
      exitWith(code);
    },
    (err: unknown) => {
      settled = true;
      exitWith(report(err, argv));
    },
  );
}

/**
 * End with `code` at once when all output is written: Node's own teardown of its heap and handles
 * is 2-3 ms of every command's end here (a restore's time is until ferry exits), of which
 * process.exit() still does 1 ms. Output still queued (a slow pipe) is written first, the way Node
 * ends by itself. (ferry sets no terminal mode and has no 'exit' handler for Node's exit to undo.)
 */
function exitWith(code: number): void {
  process.exitCode = code;
  if (process.stdout.writableLength === 0 && process.stderr.writableLength === 0) {
    exitNowIfLoaded(code);
    process.exit();
  }
}

/**
 * Have Node, when started from the startup snapshot being made, run `run` on its command line.
 * `bundle` is the file name of the bundle the snapshot was made from, which stands beside the blob.
 */
export function runFromSnapshot(bundle: string, run: (argv: string[]) => void): void {
  compileStartPath();
  startupSnapshot.setDeserializeMainFunction(() => {
    // Where the blob is now (the bundle beside it finds packages from there).
    const at = process.execArgv.indexOf('--snapshot-blob');
    const blob = at < 0 ? undefined : process.execArgv[at + 1];
    if (blob) snapshotBundle.ferryBundleUrl = pathToFileURL(`${dirname(blob)}/${bundle}`).href;
    startup.fromSnapshot = true;
    run(process.argv.slice(1));
  });
}

/**
 * While a snapshot is made, run once what Node runs of its own at every command's start (parse the
 * arguments, write to a stream), so that the snapshot holds it compiled: about 1 ms of a start here.
 */
function compileStartPath(): void {
  parseArgs({
    args: ['--flag', '-o', 'value', 'positional'],
    options: { flag: { type: 'boolean' }, option: { type: 'string', short: 'o' } },
    allowPositionals: true,
  });
  new Writable({ write: (_chunk, _encoding, done) => done() }).end('text');
}

/** The bundle's URL, which stands for import.meta.url in it (see scripts/bundle.ts). */
const snapshotBundle = globalThis as { ferryBundleUrl?: string };

/**
 * A startup snapshot of one command alone (`ferry <name> ...`): a smaller heap than the whole
 * command line's, which Node deserializes faster at every start.
 */
export function prepareCommandSnapshot(command: Command, bundle: string): Promise<void> {
  runFromSnapshot(bundle, (argv) =>
    runToExit(argv, ([, ...rest]) => {
      prepareFor(command.name);
      return runCommand(command, rest);
    }),
  );
  return Promise.resolve();
}
