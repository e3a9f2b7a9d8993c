// Live migration, stop-copy (docs/PROTOCOL.md): freeze the process, stream its image to the target
// agent while it stays frozen, and kill it only once the target says the restored copy runs. Any
// failure before that lets it run on here, and the target kills and deletes what it received.
import { randomUUID } from 'node:crypto';
import { dump, type DumpResult } from '../checkpoint.js';
import { FerryError, isFerryError } from '../errors.js';
import { initHashing } from '../image/hash.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { callAgent, describe, openRequest, responseOf, type AgentEndpoint } from './client.js';
import { StreamSink } from './stream-sink.js';
import { readEvents, type Migration } from './wire.js';

export interface MigrateOptions {
  to: AgentEndpoint;
  /** How long to wait for the target at each step (connect, each answer, a silent connection). */
  timeoutMs?: number;
  onProgress?: (progress: { stage: 'pages'; doneBytes: number; totalBytes: number }) => void;
  onWarning?: (message: string) => void;
}

export interface MigrateResult {
  /** The process's PID here (now gone) and on the target. */
  pid: number;
  targetPid: number;
  target: string;
  migrationId: string;
  /** Milliseconds the process did not run: from freezing here until it ran on the target. */
  downtimeMs: number;
  totalMs: number;
  bytesSent: number;
  /** Copy rounds (stop-copy: one). */
  rounds: number;
  /** The target's own restore time, within the downtime. */
  targetRestoreMs: number;
  /** The dump's stages on this side. */
  stages: DumpResult['stages'];
  warnings: string[];
}

const DEFAULT_TIMEOUT_MS = 30_000;
const RETRY_MS = 200;

/** Migrate process `pid` to the agent `options.to`. */
export async function migrate(pid: number, options: MigrateOptions): Promise<MigrateResult> {
  const started = performance.now();
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const target = describe(options.to);
  const migrationId = randomUUID();
  await initHashing();
  // The target answers (authenticates, has room for the stream) before anything is frozen.
  const req = openRequest(options.to, 'POST', '/v1/migrations', {
    'content-type': 'application/octet-stream',
    'ferry-migration-id': migrationId,
  });
  req.on('socket', (socket) =>
    socket.setTimeout(timeoutMs, () => req.destroy(new Error(`silent for ${timeoutMs} ms`))),
  );
  const response = responseOf(options.to, req, timeoutMs);
  req.flushHeaders();
  const res = await response;
  const sink = new StreamSink(target, req, readEvents(res), {
    timeoutMs,
    commitAgain: () => commitAgain(options.to, migrationId, timeoutMs),
  });
  let result: DumpResult;
  try {
    result = await dump(pid, { sink, onProgress: options.onProgress, onWarning: options.onWarning });
  } catch (err) {
    if (isFerryError(err, 'FERRY_MIGRATION_IN_DOUBT')) throw err;
    const why = err instanceof Error ? err.message : String(err);
    throw new FerryError(
      isFerryError(err, 'FERRY_AUTH') ? 'FERRY_AUTH' : 'FERRY_MIGRATION_FAILED',
      `migration of ${pid} to ${target} failed: ${why}; the process runs on here`,
      { cause: err },
    );
  }
  const outcome = sink.outcome!;
  return {
    pid,
    targetPid: outcome.pid,
    target,
    migrationId,
    downtimeMs: result.frozenMs,
    totalMs: performance.now() - started,
    bytesSent: sink.bytesSent,
    rounds: 1,
    targetRestoreMs: outcome.restoreMs,
    stages: result.stages,
    warnings: result.warnings,
  };
}

/** Tell the target to run the held process over a new connection, until it says what it did. */
async function commitAgain(to: AgentEndpoint, id: string, timeoutMs: number): Promise<'running' | 'aborted'> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const m = await callAgent<Migration>(
        to,
        'POST',
        `/v1/migrations/${id}/commit`,
        undefined,
        RETRY_MS * 5,
      );
      if (m.state === 'running' || m.state === 'aborted') return m.state;
      last = new Error(`the migration is ${m.state}`);
    } catch (err) {
      last = err;
    }
    await sleep(RETRY_MS);
  }
  throw last instanceof Error ? last : new Error(String(last));
}
