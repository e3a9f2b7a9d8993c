// Processes a test did not start itself (restored ones, orphaned when the ferry CLI exits) come to
// the test process as its children once it is a child subreaper, so it can kill and reap them
// promptly instead of waiting for PID 1.
import { closeSync, existsSync, readdirSync, readFileSync } from 'node:fs';
import { isErrno } from '../../src/sys/errno.js';
import { prctl, PR } from '../../src/sys/prctl.js';
import { pidfdExited, pidfdOpen, pidfdSendSignal } from '../../src/sys/pidfd.js';
import { SIG } from '../../src/sys/signal.js';
import { sleepMs } from '../../src/sys/time.js';
import { waitpid, WNOHANG } from '../../src/sys/wait.js';

let subreaper = false;

/** Make this test process the reaper of its orphaned descendants. */
export function becomeSubreaper(): void {
  if (subreaper) return;
  prctl(PR.SET_CHILD_SUBREAPER, 'PR_SET_CHILD_SUBREAPER', 1, 0, 0, 0);
  subreaper = true;
}

/** Whether `pid` is this process's descendant (its parents lead here), and not a zombie already. */
function ownLiving(pid: number): boolean {
  for (let p = pid, hops = 0; p > 1 && hops < 64; hops++) {
    let stat: string;
    try {
      stat = readFileSync(`/proc/${p}/stat`, 'latin1');
    } catch {
      return false;
    }
    const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    if (p === pid && (fields[0] === 'Z' || fields[0] === 'X')) return false;
    const ppid = Number(fields[1]);
    if (ppid === process.pid) return true;
    p = ppid;
  }
  return false;
}

/**
 * SIGKILL a process this test started (its descendant) and wait until it is gone, reaping it if it
 * is ours. A PID that is no longer a descendant of this process (it exited, and another process got
 * the PID since) is left alone: the signal goes through a pidfd opened before that is checked.
 */
export function killAndReap(pid: number): void {
  let pidfd: number;
  try {
    pidfd = pidfdOpen(pid);
  } catch (err) {
    if (isErrno(err, 'ESRCH')) return; // gone, and reaped
    throw err;
  }
  try {
    const own = ownLiving(pid);
    try {
      if (own) pidfdSendSignal(pidfd, SIG.SIGKILL);
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) throw err; // it exited since it was found living: reaped below
    }
    for (let i = 0; i < 500; i++) {
      try {
        if (waitpid(pid, WNOHANG)) return; // ours, reaped
      } catch (err) {
        if (!isErrno(err, 'ECHILD')) throw err;
        // Not this process's child: gone once its own parent reaps it.
        if (!own || pidfdExited(pidfd)) return;
      }
      sleepMs(10);
    }
    throw new Error(`process ${pid} did not go away`);
  } finally {
    closeSync(pidfd);
  }
}

/** The children of `pid` (of all its threads), in PID order; none once it is gone. */
export function childrenOf(pid: number): number[] {
  try {
    return readdirSync(`/proc/${pid}/task`)
      .flatMap((tid) => readFileSync(`/proc/${pid}/task/${tid}/children`, 'latin1').trim().split(' '))
      .filter((s) => s !== '')
      .map(Number)
      .sort((a, b) => a - b);
  } catch {
    return [];
  }
}

/** The name of process `pid`, or undefined once it is gone. */
function commOf(pid: number): string | undefined {
  try {
    return readFileSync(`/proc/${pid}/comm`, 'latin1').trim();
  } catch {
    return undefined; // exited between the listing and the reading
  }
}

/** The child of `parent` whose name is `comm`, once it has one (within 10 s). */
export async function childNamed(parent: number, comm: string): Promise<number> {
  for (const until = Date.now() + 10_000; Date.now() < until; await new Promise((r) => setTimeout(r, 20))) {
    const found = childrenOf(parent).find((pid) => commOf(pid) === comm);
    if (found) return found;
  }
  throw new Error(`no ${comm} under ${parent}`);
}

/** `pid` and its descendants, parents first. */
export function treeOf(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...childrenOf(all[i]!));
  return all;
}

/**
 * Kill a process and every descendant it has now, then reap them: once their parents are gone, the
 * descendants (zombies too) are this process's to reap.
 */
export function killTree(pid: number): void {
  for (const p of treeOf(pid)) killAndReap(p);
}

/** This test process's descendants now, its own children first. */
export function descendants(): number[] {
  return treeOf(process.pid).slice(1);
}

/** Whether `pid` is a zombie (exited, not reaped). */
function isZombie(pid: number): boolean {
  try {
    return readFileSync(`/proc/${pid}/stat`, 'latin1').split(') ')[1]!.startsWith('Z');
  } catch {
    return false;
  }
}

/**
 * Reap the processes of a tree a dump killed as they come to this process (a subreaper), until
 * every one of `pids` is gone and no zombie child is left, so that their PIDs are free for the
 * restore (up to 5 s).
 */
export async function reapOrphans(pids: readonly number[]): Promise<void> {
  const gone = (pid: number): boolean => !existsSync(`/proc/${pid}`);
  for (const until = Date.now() + 5000; Date.now() < until; await new Promise((r) => setTimeout(r, 10))) {
    const zombies = childrenOf(process.pid).filter(isZombie);
    zombies.forEach(killAndReap);
    if (zombies.length === 0 && pids.every(gone)) return;
  }
}
