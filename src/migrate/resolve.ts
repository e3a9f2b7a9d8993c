// Settling a migration left in doubt. Before the source tells the target to run its copy, it
// fences the process (Tracee.fence): should the source lose the target then, or die, the process
// stays stopped here, never running while the copy may run there. Settling asks the target, as the
// source would have, to run the copy (POST /v1/migrations/<id>/commit): if it runs there, the
// process here is killed; if the target aborted it, or knows nothing of it (an agent restarted
// since: the copy it held died with it), the process here is continued.
import { setTimeout as sleep } from 'node:timers/promises';
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseStat } from '../proc/stat.js';
import { parseStatus } from '../proc/status.js';
import { isErrno } from '../sys/errno.js';
import { pidfdExited, pidfdOpen, pidfdSendSignal } from '../sys/pidfd.js';
import { SIG } from '../sys/signal.js';
import { closeSync } from 'node:fs';
import { AgentError, callAgent, describe, probeAgent, type AgentEndpoint } from './client.js';
import type { Migration } from './wire.js';

const RETRY_MS = 200;
const KILL_WAIT_MS = 5000;

/**
 * Tell the target to run the held process over a new connection, until it says what it did or
 * `timeoutMs` runs out. A target without the migration has no copy running: 'aborted'.
 */
export async function commitAgain(
  to: AgentEndpoint,
  id: string,
  timeoutMs: number,
): Promise<'running' | 'aborted'> {
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
      if (err instanceof AgentError && err.status === 404) return 'aborted';
      last = err;
    }
    await sleep(RETRY_MS);
  }
  throw last instanceof Error ? last : new Error(String(last));
}

/** The command that settles migration `id` of process `pid` to `to`. */
export function resolveCommand(pid: number, id: string, to: AgentEndpoint): string {
  return `ferry resolve ${pid} --migration ${id} --to ${describe(to)}`;
}

/** Why a migration is in doubt, and what to run. */
export function inDoubtMessage(pid: number, id: string, to: AgentEndpoint, why: string): string {
  return (
    `${why}; process ${pid} is left stopped here, and its copy may run there: ` +
    `settle it with \`${resolveCommand(pid, id, to)}\``
  );
}

export interface Resolution {
  pid: number;
  migrationId: string;
  /** 'moved': the copy runs on the target, the process here was killed; 'kept': it runs on here. */
  outcome: 'moved' | 'kept';
}

/**
 * Settle migration `id` of the stopped process `pid` (started at `startTime`, when known) to `to`.
 * Throws FERRY_MIGRATION_IN_DOUBT while the target cannot be reached.
 */
export async function resolveInDoubt(
  pid: number,
  id: string,
  to: AgentEndpoint,
  options: { startTime?: bigint; timeoutMs: number },
): Promise<Resolution> {
  let pidfd: number;
  try {
    pidfd = pidfdOpen(pid);
  } catch (err) {
    if (isErrno(err, 'ESRCH'))
      throw new FerryError('FERRY_NO_SUCH_PROCESS', `no process ${pid}: nothing is left to settle here`);
    throw err;
  }
  try {
    const stat = parseStat(readProcText(pid, 'stat'));
    if (options.startTime !== undefined && stat.startTime !== options.startTime)
      throw new FerryError('FERRY_NO_SUCH_PROCESS', `process ${pid} is gone: its PID is another's now`);
    if (stat.state !== 'T' || parseStatus(readProcText(pid, 'status')).tracerPid !== 0)
      throw new FerryError(
        'FERRY_USAGE',
        `process ${pid} is not stopped and free (state ${stat.state}): it is not a migration left in doubt`,
      );
    let outcome: 'running' | 'aborted';
    try {
      await probeAgent(to, options.timeoutMs);
      outcome = await commitAgain(to, id, options.timeoutMs);
    } catch (err) {
      throw new FerryError(
        'FERRY_MIGRATION_IN_DOUBT',
        inDoubtMessage(
          pid,
          id,
          to,
          `cannot reach ${describe(to)} (${err instanceof Error ? err.message : String(err)})`,
        ),
        { cause: err },
      );
    }
    if (outcome === 'running') {
      pidfdSendSignal(pidfd, SIG.SIGKILL);
      if (!pidfdExited(pidfd, KILL_WAIT_MS))
        throw new FerryError('FERRY_INTERNAL', `process ${pid} did not die of SIGKILL`);
      return { pid, migrationId: id, outcome: 'moved' };
    }
    pidfdSendSignal(pidfd, SIG.SIGCONT);
    return { pid, migrationId: id, outcome: 'kept' };
  } finally {
    closeSync(pidfd);
  }
}
