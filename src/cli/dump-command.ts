// ferry dump <pid> -D <dir> [--vmas <spec>] [--leave-running] [--no-tree] [--tcp-established]
//   [--pre-copy | --no-pre-copy] [--track-mem] [--parent <dir>] [--compress] [--sync] [--json]
// ferry dump <pid> -D <dir> --every <interval> [--keep <n>] [--compress] [--json]
import { dump, type DumpResult } from '../checkpoint.js';
import { dumpEvery, type EveryResult } from '../periodic.js';
import { FerryError } from '../errors.js';
import {
  interruptible,
  parseDuration,
  parsePid,
  printResult,
  requireDir,
  warnOnStderr,
  type Command,
} from './command.js';
import { formatBytes, formatMs } from './format.js';
import { withProgressBar } from './progress.js';

function summary(r: DumpResult): string {
  const fate = r.leftRunning ? 'left running' : 'killed';
  const rounds = r.precopyRounds.length;
  const since = rounds > 0 ? 'the rounds' : 'the parent';
  const unchanged = r.unchangedPages > 0 ? `, ${r.unchangedPages} unchanged since ${since}` : '';
  const precopied =
    rounds > 0
      ? `${formatBytes(r.precopyRounds.reduce((n, round) => n + round.bytes, 0))} copied in ` +
        `${rounds} round${rounds === 1 ? '' : 's'} while it ran, then `
      : '';
  return (
    `dumped ${r.pid}${r.processes > 1 ? ` and ${r.processes - 1} descendants` : ''} to ${r.dir}: frozen ${formatMs(r.frozenMs)}, ${formatBytes(r.bytesWritten)} written, ` +
    `${precopied}${r.pages} pages${rounds > 0 ? ' frozen' : ''} (${r.zeroPages} zero pages left out${unchanged}), ${r.vmas} VMAs; ${fate}`
  );
}

/** --pre-copy and --no-pre-copy: DumpOptions.preCopy. */
function preCopyOption(values: Record<string, unknown>): boolean | 'auto' {
  if (values['pre-copy'] === true && values['no-pre-copy'] === true)
    throw new FerryError('FERRY_USAGE', '--pre-copy and --no-pre-copy contradict each other');
  return values['pre-copy'] === true ? true : values['no-pre-copy'] === true ? false : 'auto';
}

function parseKeep(value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !Number.isInteger(n) || n < 1)
    throw new FerryError('FERRY_USAGE', '--keep takes a whole number of images, 1 or more');
  return n;
}

/** `dump --every`: one line per checkpoint until the process exits or SIGINT/SIGTERM. */
async function runEvery(pid: number, dir: string, values: Record<string, unknown>): Promise<number> {
  const stop = new AbortController();
  const onSignal = (): void => stop.abort();
  process.on('SIGINT', onSignal).on('SIGTERM', onSignal);
  let result: EveryResult;
  try {
    result = await dumpEvery(pid, {
      dir,
      intervalMs: parseDuration('every', String(values.every)),
      keep: parseKeep(values.keep),
      compress: values.compress === true,
      signal: stop.signal,
      onWarning: values.json ? undefined : warnOnStderr,
      onDump: (r) => {
        const line = values.json
          ? JSON.stringify(r)
          : `${r.image}: frozen ${formatMs(r.frozenMs)}, ${formatBytes(r.bytesWritten)} written, ` +
            `${r.pages} pages stored, ${r.unchangedPages} unchanged`;
        process.stdout.write(`${line}\n`);
      },
    });
  } finally {
    process.off('SIGINT', onSignal).off('SIGTERM', onSignal);
  }
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    const why = result.ended === 'exited' ? `process ${pid} exited` : 'stopped';
    process.stdout.write(`${why}: ${result.dumps} checkpoints, the newest in ${result.latest ?? '-'}\n`);
  }
  return 0;
}

export const dumpCommand: Command = {
  name: 'dump',
  summary: 'checkpoint a running process into an image directory',
  usage:
    'ferry dump <pid> -D <dir> [--vmas <spec>] [--leave-running] [--no-tree] [--tcp-established]\n' +
    '       [--pre-copy | --no-pre-copy] [--track-mem] [--parent <dir>] [--compress] [--sync] [--json]\n' +
    '       ferry dump <pid> -D <dir> --every <interval> [--keep <n>] [--compress] [--json]',
  options: {
    dir: { type: 'string', short: 'D' },
    every: { type: 'string' },
    'track-mem': { type: 'boolean' },
    parent: { type: 'string' },
    keep: { type: 'string' },
    vmas: { type: 'string' },
    'leave-running': { type: 'boolean' },
    'no-tree': { type: 'boolean' },
    'tcp-established': { type: 'boolean' },
    'pre-copy': { type: 'boolean' },
    'no-pre-copy': { type: 'boolean' },
    compress: { type: 'boolean' },
    sync: { type: 'boolean' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const pid = parsePid(positionals[0]);
    const dir = requireDir(values.dir);
    if (values.every !== undefined) return runEvery(pid, dir, values);
    if (values.keep !== undefined) throw new FerryError('FERRY_USAGE', '--keep goes with --every');
    const result = await withProgressBar(`dumping ${pid}`, formatBytes, (bar) =>
      interruptible((signal) =>
        dump(pid, {
          signal,
          dir,
          vmas: values.vmas as string | undefined,
          leaveRunning: values['leave-running'] === true,
          tree: values['no-tree'] !== true,
          tcpEstablished: values['tcp-established'] === true,
          trackMem: values['track-mem'] === true,
          parent: values.parent as string | undefined,
          preCopy: preCopyOption(values),
          compress: values.compress === true,
          sync: values.sync === true,
          onProgress: (p) => bar.update(p.doneBytes, p.totalBytes),
          onWarning: values.json ? undefined : warnOnStderr,
        }),
      ),
    );
    printResult(values.json, result, summary);
    return 0;
  },
};
