// The ferry command line: a thin layer over the library. Errors become one line and an exit code;
// a stack trace only with --debug.
import { FerryError } from '../errors.js';
import { type Command } from './command.js';
import { commandHelp, prepareFor, runCommand, runToExit } from './run.js';
import { FERRY_VERSION } from '../version.js';

/**
 * Every command, in the order `ferry --help` lists them. A command's module is loaded only when it
 * runs: each pulls in its part of the library, and loading all of it would slow every start.
 */
const COMMANDS: readonly { name: string; load: () => Promise<Command> }[] = [
  { name: 'demo', load: async () => (await import('./demo-command.js')).demoCommand },
  { name: 'check', load: async () => (await import('./check-command.js')).checkCommand },
  { name: 'inspect', load: async () => (await import('./inspect-command.js')).inspectCommand },
  { name: 'dump', load: async () => (await import('./dump-command.js')).dumpCommand },
  { name: 'restore', load: async () => (await import('./restore-command.js')).restoreCommand },
  { name: 'show', load: async () => (await import('./show-command.js')).showCommand },
  { name: 'untrack', load: async () => (await import('./untrack-command.js')).untrackCommand },
  { name: 'migrate', load: async () => (await import('./migrate-command.js')).migrateCommand },
  { name: 'resolve', load: async () => (await import('./resolve-command.js')).resolveCommand },
  { name: 'run', load: async () => (await import('./run-job-command.js')).runJobCommand },
  { name: 'balancer', load: async () => (await import('./balancer-command.js')).balancerCommand },
  { name: 'drain', load: async () => (await import('./drain-command.js')).drainCommand },
  { name: 'undrain', load: async () => (await import('./drain-command.js')).undrainCommand },
  { name: 'cluster', load: async () => (await import('./cluster-command.js')).clusterCommand },
  { name: 'agent', load: async () => (await import('./agent-command.js')).agentCommand },
  { name: 'guard', load: async () => (await import('./guard-command.js')).guardCommand },
];

async function help(): Promise<string> {
  const commands = await Promise.all(COMMANDS.map((c) => c.load()));
  const width = Math.max(...commands.map((c) => c.name.length));
  return [
    'ferry: checkpoint, restore and migrate running Linux processes, VMA by VMA, and balance load across hosts',
    '',
    'usage: ferry <command> [options]',
    '',
    ...commands.map((c) => `  ${c.name.padEnd(width)}  ${c.summary}`),
    '',
    'Every command takes --json (machine-readable output), --debug (stack traces) and --help.',
  ].join('\n');
}

async function main(argv: string[]): Promise<number> {
  const [name, ...rest] = argv;
  if (name === undefined || name === '--help' || name === '-h' || name === 'help') {
    const target = COMMANDS.find((c) => c.name === rest[0]);
    process.stdout.write(`${target ? commandHelp(await target.load()) : await help()}\n`);
    return 0;
  }
  if (name === '--version') {
    process.stdout.write(`${FERRY_VERSION}\n`);
    return 0;
  }
  const entry = COMMANDS.find((c) => c.name === name);
  if (!entry) throw new FerryError('FERRY_USAGE', `unknown command "${name}" (see ferry --help)`);
  prepareFor(name);
  return runCommand(await entry.load(), rest);
}

/**
 * Commands whose modules the startup snapshot holds loaded: all but those that need node:http,
 * which Node cannot put in a snapshot (they load as they run).
 */
const SNAPSHOT_COMMANDS = new Set([
  'demo',
  'check',
  'inspect',
  'dump',
  'restore',
  'show',
  'untrack',
  'guard',
]);

/** Load the modules of the commands the startup snapshot holds. */
export async function loadSnapshotCommands(): Promise<void> {
  await Promise.all(COMMANDS.filter((c) => SNAPSHOT_COMMANDS.has(c.name)).map((c) => c.load()));
}

/** Run the command line `argv` (without node and script), then end the process with its exit code. */
export function runCli(argv: string[]): void {
  runToExit(argv, main);
}
