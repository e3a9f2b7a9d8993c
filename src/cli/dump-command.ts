// ferry dump <pid> -D <dir> [--vmas <spec>] [--leave-running] [--compress] [--sync] [--json]
import { dump, type DumpResult } from '../checkpoint.js';
import { FerryError } from '../errors.js';
import { printResult, type Command } from './command.js';
import { formatBytes, formatMs } from './format.js';
import { parsePid } from './inspect-command.js';
import { withProgressBar } from './progress.js';

export function requireDir(value: unknown): string {
  if (typeof value !== 'string' || value === '')
    throw new FerryError('FERRY_USAGE', 'an image directory is required: -D <dir>');
  return value;
}

export function warnOnStderr(message: string): void {
  process.stderr.write(`ferry: warning: ${message}\n`);
}

function summary(r: DumpResult): string {
  const fate = r.leftRunning ? 'left running' : 'killed';
  return (
    `dumped ${r.pid} to ${r.dir}: frozen ${formatMs(r.frozenMs)}, ${formatBytes(r.bytesWritten)} written, ` +
    `${r.pages} pages (${r.zeroPages} zero pages left out), ${r.vmas} VMAs; ${fate}`
  );
}

export const dumpCommand: Command = {
  name: 'dump',
  summary: 'checkpoint a running process into an image directory',
  usage: 'ferry dump <pid> -D <dir> [--vmas <spec>] [--leave-running] [--compress] [--sync] [--json]',
  options: {
    dir: { type: 'string', short: 'D' },
    vmas: { type: 'string' },
    'leave-running': { type: 'boolean' },
    compress: { type: 'boolean' },
    sync: { type: 'boolean' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const pid = parsePid(positionals[0]);
    const dir = requireDir(values.dir);
    const result = await withProgressBar(`dumping ${pid}`, formatBytes, (bar) =>
      dump(pid, {
        dir,
        vmas: values.vmas as string | undefined,
        leaveRunning: values['leave-running'] === true,
        compress: values.compress === true,
        sync: values.sync === true,
        onProgress: (p) => bar.update(p.doneBytes, p.totalBytes),
        onWarning: values.json ? undefined : warnOnStderr,
      }),
    );
    printResult(values.json, result, summary);
    return 0;
  },
};
