// Live migration (docs/PROTOCOL.md). Stop-copy: freeze the process, stream its image to the target
// agent while it stays frozen. Pre-copy: first copy its memory in rounds while it runs (memory/precopy.ts),
// then freeze it and send only what changed. Post-copy: freeze it, send all but its anonymous
// memory, let the copy run on the target and send the pages after (memory/postcopy.ts), those it
// faults on first. Any failure before the target says the copy runs lets the process run on here,
// and the target kills and deletes what it received; the process here is killed once the target
// has every page.
import { randomUUID } from 'node:crypto';
import { dump, type DumpResult } from '../checkpoint.js';
import { FerryError, isFerryError } from '../errors.js';
import { initHashing } from '../image/hash.js';
import { streamKey } from '../image/mac.js';
import { describe, openRequest, probeAgent, responseOf, type AgentEndpoint } from './client.js';
import { commitAgain, inDoubtMessage } from './resolve.js';
import { precopy, type Precopy, type RoundReport, type TrackingChoice } from '../memory/precopy.js';
import type { WriteTracker } from '../memory/dirty.js';
import { StreamSink } from './stream-sink.js';
import { sendPages, type PostCopyReport } from '../memory/postcopy.js';
import { readEvents } from './wire.js';
import { now } from '../timings.js';
import { withGuardian, type Guardian } from '../guardian.js';
import { encodeJobHeader, JOB_HEADER, type JobInfo } from '../cluster/job.js';

export type MigrateMode = 'stop-copy' | 'pre-copy' | 'post-copy' | 'hybrid';
export const MIGRATE_MODES: readonly MigrateMode[] = ['stop-copy', 'pre-copy', 'post-copy', 'hybrid'];

export interface MigrateOptions {
  to: AgentEndpoint;
  /**
   * 'stop-copy' (the default), 'pre-copy', 'post-copy', or 'hybrid': one pre-copy round, then
   * post-copy of what the process wrote since.
   */
  mode?: MigrateMode;
  /** Pre-copy: the downtime to aim for (default 300 ms). */
  maxDowntimeMs?: number;
  /** Pre-copy: how writes are tracked (default 'auto': userfaultfd, else page hashes). */
  dirtyTracking?: TrackingChoice;
  /** Pre-copy: hears each round as it ends. */
  onRound?: (round: RoundReport) => void;
  /** How long to wait for the target at each step (connect, each answer, a silent connection). */
  timeoutMs?: number;
  /**
   * Bytes of pages copied in the current round (`round` 0: the final, frozen copy; -1: post-copy's
   * pages, sent once the copy runs on the target).
   */
  onProgress?: (progress: { round: number; doneBytes: number; totalBytes: number }) => void;
  onWarning?: (message: string) => void;
  /** The guardian of the source process, should ferry die (DumpOptions.guardian); else its own. */
  guardian?: Guardian;
  /**
   * Aborting it stops the migration before the target is told to run the process (the process runs
   * on here); after that, the migration goes on to its end.
   */
  signal?: AbortSignal;
  /** The managed job this process is (an agent moving it): told to the target with the stream. */
  job?: JobInfo;
}

export interface MigrateResult {
  /** The process's PID here (now gone) and on the target. */
  pid: number;
  targetPid: number;
  target: string;
  migrationId: string;
  /** Milliseconds the process did not run: from freezing here until it ran on the target. */
  downtimeMs: number;
  /** Post-copy: the pages sent after the copy ran (those the target asked for among them). */
  postCopy: PostCopyReport | null;
  totalMs: number;
  bytesSent: number;
  mode: MigrateMode;
  /** Copy rounds, the final frozen one included (stop-copy: one). */
  rounds: number;
  /** Pre-copy: the rounds while the process ran, and how writes were tracked. */
  precopyRounds: RoundReport[];
  dirtyTracking: WriteTracker['method'] | null;
  /** Pages the final copy sent, and pages it left to the rounds (unchanged since). */
  finalPages: number;
  unchangedPages: number;
  /** The target's own restore time, within the downtime, and its stages. */
  targetRestoreMs: number;
  targetStages: Record<string, number>;
  /** The dump's stages on this side. */
  stages: DumpResult['stages'];
  warnings: string[];
}

const DEFAULT_TIMEOUT_MS = 30_000;
export const DEFAULT_MAX_DOWNTIME_MS = 300;

/** Migrate process `pid` to the agent `options.to`. */
export async function migrate(pid: number, options: MigrateOptions): Promise<MigrateResult> {
  return withGuardian(options.guardian, (guardian) => migrateWatched(pid, options, guardian));
}

async function migrateWatched(
  pid: number,
  options: MigrateOptions,
  guardian: Guardian,
): Promise<MigrateResult> {
  const started = now();
  const timeoutMs = options.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const target = describe(options.to);
  const migrationId = randomUUID();
  const mode = options.mode ?? 'stop-copy';
  await initHashing();
  // The target answers (speaks what we speak, authenticates, has room for the stream) before
  // anything is frozen.
  await probeAgent(options.to, timeoutMs);
  const req = openRequest(options.to, 'POST', '/v1/migrations', {
    'content-type': 'application/octet-stream',
    'ferry-migration-id': migrationId,
    // The target may start the process's stub now, under this PID, while this side freezes it.
    'ferry-pid': String(pid),
    'ferry-mode': mode,
    ...(options.job ? { [JOB_HEADER]: encodeJobHeader(options.job) } : {}),
  });
  req.on('socket', (socket) =>
    socket.setTimeout(timeoutMs, () => req.destroy(new Error(`silent for ${timeoutMs} ms`))),
  );
  const response = responseOf(options.to, req, timeoutMs);
  req.flushHeaders();
  const res = await response;
  const nonce = res.headers['ferry-nonce'];
  if (typeof nonce !== 'string' || !/^[0-9a-f]{32}$/.test(nonce))
    throw new FerryError(
      'FERRY_CONNECTION',
      `${target} gave no nonce for the migration: is it a ferry agent?`,
    );
  const sink = new StreamSink(target, req, readEvents(res), {
    sealKey: streamKey(options.to.token, migrationId, nonce),
    timeoutMs,
    commitAgain: () => commitAgain(options.to, migrationId, timeoutMs),
    signal: options.signal,
  });
  let pre: Precopy | undefined;
  let post: PostCopyReport | undefined;
  let result: DumpResult;
  try {
    if (mode === 'pre-copy' || mode === 'hybrid') {
      try {
        pre = await precopy(pid, sink, {
          maxRounds: mode === 'hybrid' ? 1 : undefined,
          watch: guardian,
          signal: options.signal,
          maxDowntimeMs: options.maxDowntimeMs ?? DEFAULT_MAX_DOWNTIME_MS,
          tracking: options.dirtyTracking,
          onWarning: options.onWarning,
          onRound: options.onRound,
          onProgress: options.onProgress,
        });
      } catch (err) {
        await sink.abort();
        throw err;
      }
    }
    result = await dump(pid, {
      sink,
      guardian,
      // Should ferry die past the fence, the guardian settles the migration as `ferry resolve` does.
      beforeFence: () => guardian.migrating(pid, migrationId, options.to, timeoutMs),
      signal: options.signal,
      baseline: pre?.baseline,
      onProgress: (p) => options.onProgress?.({ round: 0, doneBytes: p.doneBytes, totalBytes: p.totalBytes }),
      onWarning: options.onWarning,
      postCopy:
        mode === 'post-copy' || mode === 'hybrid'
          ? async (vmas) => {
              post = await sendPages(pid, vmas, sink.pageChannel(), pre?.baseline, (doneBytes, totalBytes) =>
                options.onProgress?.({ round: -1, doneBytes, totalBytes }),
              );
            }
          : undefined,
    });
  } catch (err) {
    const why = err instanceof Error ? err.message : String(err);
    if (isFerryError(err, 'FERRY_MIGRATION_IN_DOUBT'))
      throw new FerryError('FERRY_MIGRATION_IN_DOUBT', inDoubtMessage(pid, migrationId, options.to, why), {
        cause: err,
      });
    if (isFerryError(err, 'FERRY_INTERRUPTED'))
      throw new FerryError(
        'FERRY_INTERRUPTED',
        `migration of ${pid} to ${target} ${why}; the process runs on here`,
      );
    throw new FerryError(
      isFerryError(err, 'FERRY_AUTH') ? 'FERRY_AUTH' : 'FERRY_MIGRATION_FAILED',
      `migration of ${pid} to ${target} failed: ${why}; the process runs on here`,
      { cause: err },
    );
  } finally {
    pre?.baseline.tracker.close();
  }
  const outcome = sink.outcome!;
  return {
    pid,
    targetPid: outcome.pid,
    target,
    migrationId,
    downtimeMs: post ? result.committedMs : result.frozenMs,
    postCopy: post ?? null,
    totalMs: now() - started,
    bytesSent: sink.bytesSent,
    mode,
    rounds: (pre?.rounds.length ?? 0) + 1,
    precopyRounds: pre?.rounds ?? [],
    dirtyTracking: pre?.baseline.tracker.method ?? null,
    finalPages: result.pages + result.zeroPages,
    unchangedPages: result.unchangedPages,
    targetRestoreMs: outcome.restoreMs,
    targetStages: outcome.restoreStages,
    stages: result.stages,
    warnings: result.warnings,
  };
}
