// The processes an agent manages: those it restored (its children, which it reaps) and those it
// holds for a migration. A held process is stopped until the source lets go.
import { letRun } from '../restore.js';
import { kill, SIG } from '../sys/signal.js';
import { reapIfEnded, waitpid } from '../sys/wait.js';
import { isErrno } from '../sys/errno.js';

import type { JobInfo } from '../cluster/job.js';

export type ProcessState = 'held' | 'running' | 'exited' | 'migrated';

export interface ManagedProcess {
  pid: number;
  /** The PID it had where it was dumped. */
  originalPid: number;
  /** Its real uid: a token bound to a uid sees only its processes. */
  uid: number;
  command: string;
  /** How it came: `ferry run`, a restore request, or a migration (with its id). */
  origin: 'run' | 'restore' | 'migration';
  migrationId?: string;
  state: ProcessState;
  /** When it was restored (ms since the epoch). */
  since: number;
  /** How it ended, once it has. */
  exit?: { code: number } | { signal: number };
  /** A managed job (started by `ferry run`, or one that migrated in): the balancer may move it. */
  job?: JobInfo;
  /** Where it went, once migrated. */
  movedTo?: string;
}

const REAP_INTERVAL_MS = 500;

/** The entry of a process a restore request just restored from an image of `state` (running, the agent's child). */
export function restoredProcess(
  result: { pid: number; originalPid: number },
  state: { creds: { uids: number[] }; command: string },
  job?: JobInfo,
): ManagedProcess {
  return {
    pid: result.pid,
    originalPid: result.originalPid,
    uid: state.creds.uids[0]!,
    command: state.command,
    origin: 'restore',
    state: 'running',
    since: Date.now(),
    ...(job ? { job } : {}),
  };
}

export class Registry {
  private readonly processes = new Map<number, ManagedProcess>();
  private readonly timer: NodeJS.Timeout;

  /** `onAdd`: hears each process added (the agent puts it in its cgroup). */
  constructor(private readonly onAdd: (p: ManagedProcess) => void = () => {}) {
    this.timer = setInterval(() => this.reap(), REAP_INTERVAL_MS);
    this.timer.unref();
  }

  add(p: ManagedProcess): void {
    this.processes.set(p.pid, p);
    this.onAdd(p);
  }

  /** The live process of job `id`. */
  job(id: string): ManagedProcess | undefined {
    this.reap();
    return [...this.processes.values()].find(
      (p) => p.job?.id === id && p.state !== 'migrated' && p.state !== 'exited',
    );
  }

  /** Mark a process as gone to `to` (its source copy was killed by the migration, and is reaped here). */
  migrated(pid: number, to: string): void {
    const p = this.processes.get(pid);
    if (!p) return;
    p.state = 'migrated';
    p.movedTo = to;
  }

  get(pid: number): ManagedProcess | undefined {
    return this.processes.get(pid);
  }

  list(): ManagedProcess[] {
    this.reap();
    return [...this.processes.values()];
  }

  /** Let a held process run, or stay stopped (`stopped`: it was stopped at the source). */
  run(pid: number, stopped = false, lazy = false): void {
    const p = this.processes.get(pid);
    if (!p || p.state !== 'held') return;
    // Pages still to come (post-copy): it dies with the agent until they are in (PageServer).
    if (lazy) kill(pid, SIG.SIGCONT);
    else letRun(pid);
    if (stopped) kill(pid, SIG.SIGSTOP);
    p.state = 'running';
  }

  /** Kill a process (a held one whose migration failed) and reap it at once. */
  kill(pid: number): void {
    const p = this.processes.get(pid);
    if (!p || p.state === 'exited') return;
    kill(pid, SIG.SIGKILL);
    waitpid(pid, 0);
    this.processes.delete(pid);
  }

  /** Collect the exit of every child that has ended (each by PID: never another's child). */
  private reap(): void {
    for (const p of this.processes.values()) {
      if (p.state === 'exited' || p.exit !== undefined) continue;
      let status;
      try {
        // A peek first: the agent may be dumping this child (a migration out), and its ptrace
        // stops are the dump's to collect.
        status = reapIfEnded(p.pid);
      } catch (err) {
        if (!isErrno(err, 'ECHILD')) throw err;
        // Reaped already, as a tracee, by the dump that saw it die (a migration's source copy,
        // or a job that ended while being moved): how it ended is no longer known here.
        if (p.state === 'migrated') p.exit = { signal: SIG.SIGKILL };
        else p.state = 'exited';
        continue;
      }
      if (!status || status.kind === 'stopped') continue;
      p.exit = status.kind === 'exited' ? { code: status.code } : { signal: status.signal };
      // A migrated process's source copy was killed by its migration: it stays 'migrated'.
      if (p.state !== 'migrated') p.state = 'exited';
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
