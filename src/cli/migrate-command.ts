// ferry migrate <pid> --to <host:port> [--mode stop-copy|pre-copy|post-copy|hybrid] [--max-downtime <ms>]
//   [--dirty-tracking auto|uffd-wp|soft-dirty|page-hashes] [--token-file <f>] [--tls-ca <f>] [--timeout <ms>] [--json]
import { FerryError } from '../errors.js';
import { parseAddress } from '../migrate/client.js';
import { MIGRATE_MODES, migrate, type MigrateResult } from '../migrate/migrate.js';
import type { TrackingChoice } from '../memory/precopy.js';
import {
  agentToken,
  interruptible,
  parseMs,
  parsePid,
  printResult,
  readCa,
  warnOnStderr,
  type Command,
} from './command.js';
import { formatBytes, formatMs } from './format.js';
import { withProgressBar } from './progress.js';

function summary(r: MigrateResult): string {
  return (
    `migrated ${r.pid} to ${r.target} as ${r.targetPid}: downtime ${formatMs(r.downtimeMs)}, ` +
    `total ${formatMs(r.totalMs)}, ${formatBytes(r.bytesSent)} sent in ${r.rounds} round${r.rounds === 1 ? '' : 's'}` +
    (r.mode === 'pre-copy' ? ` (${formatBytes(r.finalPages * 4096)} while frozen)` : '') +
    (r.postCopy
      ? ` (${formatBytes(r.postCopy.bytes)} after it ran there, ${r.postCopy.requests} of them on its faults, in ${formatMs(r.postCopy.ms)})`
      : '')
  );
}

/** Option `name`'s value, one of `allowed` (the first when not given). */
function oneOf<T extends string>(name: string, value: unknown, allowed: readonly T[]): T {
  if (value === undefined) return allowed[0]!;
  if (typeof value === 'string' && (allowed as readonly string[]).includes(value)) return value as T;
  throw new FerryError('FERRY_USAGE', `--${name} is ${allowed.join(', ')}`);
}

const TRACKING: readonly TrackingChoice[] = ['auto', 'uffd-wp', 'soft-dirty', 'page-hashes'];

export const migrateCommand: Command = {
  name: 'migrate',
  summary: "move a running process to another host's agent; prints its PID there",
  usage:
    'ferry migrate <pid> --to <host:port> [--mode stop-copy|pre-copy|post-copy|hybrid] [--max-downtime <ms>] ' +
    '[--dirty-tracking auto|uffd-wp|soft-dirty|page-hashes] ' +
    '[--token-file <f>] [--tls-ca <f>] [--timeout <ms>] [--json]',
  options: {
    to: { type: 'string' },
    mode: { type: 'string' },
    'max-downtime': { type: 'string' },
    'dirty-tracking': { type: 'string' },
    'token-file': { type: 'string' },
    'tls-ca': { type: 'string' },
    timeout: { type: 'string' },
  },
  positionals: { min: 1, max: 1 },
  async run({ values, positionals }) {
    const pid = parsePid(positionals[0]);
    if (typeof values.to !== 'string')
      throw new FerryError('FERRY_USAGE', 'give the target agent: --to <host:port>');
    const to = parseAddress(values.to);
    const ca = readCa(values['tls-ca']);
    const mode = oneOf('mode', values.mode, MIGRATE_MODES);
    const maxDowntimeMs = parseMs('max-downtime', values['max-downtime']);
    const dirtyTracking = oneOf('dirty-tracking', values['dirty-tracking'], TRACKING);
    if (maxDowntimeMs !== undefined && mode !== 'pre-copy')
      throw new FerryError('FERRY_USAGE', '--max-downtime goes with --mode pre-copy');
    if (values['dirty-tracking'] !== undefined && mode !== 'pre-copy' && mode !== 'hybrid')
      throw new FerryError('FERRY_USAGE', '--dirty-tracking goes with --mode pre-copy or hybrid');
    const result = await withProgressBar(`migrating ${pid}`, formatBytes, (bar) =>
      interruptible((signal) =>
        migrate(pid, {
          signal,
          to: { ...to, token: agentToken(values['token-file']), ca },
          mode,
          maxDowntimeMs,
          dirtyTracking,
          timeoutMs: parseMs('timeout', values.timeout),
          onProgress: (p) =>
            bar.update(
              p.doneBytes,
              p.totalBytes,
              p.round > 0 ? `round ${p.round}` : p.round === 0 ? 'frozen' : 'running there',
            ),
          onWarning: values.json ? undefined : warnOnStderr,
        }),
      ),
    );
    printResult(values.json, result, summary);
    return 0;
  },
};
