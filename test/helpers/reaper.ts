// Processes a test did not start itself (restored ones, orphaned when the ferry CLI exits) come to
// the test process as its children once it is a child subreaper, so it can kill and reap them
// promptly instead of waiting for PID 1.
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { isErrno } from '../../src/sys/errno.js';
import { prctl, PR } from '../../src/sys/prctl.js';
import { kill, SIG } from '../../src/sys/signal.js';
import { sleepMs } from '../../src/sys/time.js';
import { waitpid, WNOHANG } from '../../src/sys/wait.js';

let subreaper = false;

/** Make this test process the reaper of its orphaned descendants. */
export function becomeSubreaper(): void {
  if (subreaper) return;
  prctl(PR.SET_CHILD_SUBREAPER, 'PR_SET_CHILD_SUBREAPER', 1, 0, 0, 0);
  subreaper = true;
}

/** SIGKILL a process by PID and wait until it is gone (reaping it if it is ours). */
export function killAndReap(pid: number): void {
  try {
    kill(pid, SIG.SIGKILL);
  } catch (err) {
    if (!isErrno(err, 'ESRCH')) throw err;
  }
  for (let i = 0; i < 500; i++) {
    try {
      if (waitpid(pid, WNOHANG)) return;
    } catch (err) {
      if (!isErrno(err, 'ECHILD')) throw err;
      if (!existsSync(`/proc/${pid}`)) return;
    }
    sleepMs(10);
  }
  throw new Error(`process ${pid} did not go away`);
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

/** `pid` and its descendants, parents first. */
export function treeOf(pid: number): number[] {
  const all = [pid];
  for (let i = 0; i < all.length; i++) all.push(...childrenOf(all[i]!));
  return all;
}

/**
 * Kill a process and every descendant it has now, each by PID, then reap them: once their parents
 * are gone, the descendants (zombies too) are this process's to reap.
 */
export function killTree(pid: number): void {
  const all = treeOf(pid);
  for (const p of all) {
    try {
      kill(p, SIG.SIGKILL);
    } catch (err) {
      if (!isErrno(err, 'ESRCH')) throw err;
    }
  }
  for (const p of all) killAndReap(p);
}
