// The processes an agent manages: those it restored (its children, which it reaps) and those it
// holds for a migration. A held process is stopped until the source lets go.
import { letRun } from '../restore.js';
import { kill, SIG } from '../sys/signal.js';
import { waitpid, WNOHANG } from '../sys/wait.js';
import { isErrno } from '../sys/errno.js';

export type ProcessState = 'held' | 'running' | 'exited';

export interface ManagedProcess {
  pid: number;
  /** The PID it had where it was dumped. */
  originalPid: number;
  /** Its real uid: a token bound to a uid sees only its processes. */
  uid: number;
  command: string;
  /** How it came: a restore request, or a migration (with its id). */
  origin: 'restore' | 'migration';
  migrationId?: string;
  state: ProcessState;
  /** When it was restored (ms since the epoch). */
  since: number;
  /** How it ended, once it has. */
  exit?: { code: number } | { signal: number };
}

const REAP_INTERVAL_MS = 500;

export class Registry {
  private readonly processes = new Map<number, ManagedProcess>();
  private readonly timer: NodeJS.Timeout;

  constructor() {
    this.timer = setInterval(() => this.reap(), REAP_INTERVAL_MS);
    this.timer.unref();
  }

  add(p: ManagedProcess): void {
    this.processes.set(p.pid, p);
  }

  get(pid: number): ManagedProcess | undefined {
    return this.processes.get(pid);
  }

  list(): ManagedProcess[] {
    this.reap();
    return [...this.processes.values()];
  }

  /** Let a held process run (it no longer dies with the agent). */
  /** Let a held process run, or stay stopped (`stopped`: it was stopped at the source). */
  run(pid: number, stopped = false): void {
    const p = this.processes.get(pid);
    if (!p || p.state !== 'held') return;
    letRun(pid);
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
      if (p.state === 'exited') continue;
      let status;
      try {
        status = waitpid(p.pid, WNOHANG);
      } catch (err) {
        if (!isErrno(err, 'ECHILD')) throw err;
        status = null;
      }
      if (status && status.kind !== 'stopped') {
        p.state = 'exited';
        p.exit = status.kind === 'exited' ? { code: status.code } : { signal: status.signal };
      }
    }
  }

  close(): void {
    clearInterval(this.timer);
  }
}
