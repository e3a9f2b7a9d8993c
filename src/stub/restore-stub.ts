// The stub a restore turns into the restored process, under the original PID when it is free and
// the kernel allows: clone3() with set_tid run inside a first stub (CLONE_PARENT, so the new process
// is ferry's child too), else, where clone3 cannot set a PID, through ns_last_pid; else under a new
// PID if allowed.
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { FerryError } from '../errors.js';
import { readProcText } from '../proc/files.js';
import { parseStat } from '../proc/stat.js';
import { CLONE, CLONE_ARGS_SIZE, cloneArgs } from '../sys/clone.js';
import { errnoName } from '../sys/errno.js';
import { NR } from '../sys/nr.js';
import { PR } from '../sys/prctl.js';
import { PTRACE_O, ptraceSetOptions } from '../sys/ptrace.js';
import { kill, SIG } from '../sys/signal.js';
import { sleepMs } from '../sys/time.js';
import { waitpid } from '../sys/wait.js';
import { RemoteSyscalls } from '../tracee/remote.js';
import { Tracee } from '../tracee/tracee.js';
import { spawnStub, STUB_SYSCALL_ADDRESS } from './stub.js';

export type SamePid = 'require' | 'try' | 'no';
export type PidMethod = 'auto' | 'clone3' | 'ns_last_pid';

export interface RestoreStub {
  pid: number;
  tracee: Tracee;
}

const STUB_NAME = 'ferry-restore';
/** PID 1 reaps orphaned zombies late: wait this long for the old PID to come free. */
const ZOMBIE_WAIT_MS = 5000;
const NS_LAST_PID = '/proc/sys/kernel/ns_last_pid';

type PidState = { state: 'free' } | { state: 'zombie' | 'taken'; comm: string };

function pidState(pid: number): PidState {
  // A PID that is free is the usual case: asked first, without the exception a failed read makes
  // (the first one in a process took 0.17-0.25 ms here, existsSync 0.02-0.03).
  if (!existsSync(`/proc/${pid}`)) return { state: 'free' };
  try {
    const stat = parseStat(readFileSync(`/proc/${pid}/stat`, 'latin1'));
    return { state: stat.state === 'Z' || stat.state === 'X' ? 'zombie' : 'taken', comm: stat.comm };
  } catch {
    return { state: 'free' };
  }
}

/** Who holds `pid`, once a zombie holding it has had time to be reaped. */
export function settledPidState(pid: number): PidState {
  let found = pidState(pid);
  for (const until = Date.now() + ZOMBIE_WAIT_MS; found.state === 'zombie' && Date.now() < until;) {
    sleepMs(20);
    found = pidState(pid);
  }
  return found;
}

/** Why `pid` cannot be had, in words. */
export function pidTakenBy(found: Exclude<PidState, { state: 'free' }>): string {
  return `it belongs to ${found.comm}${found.state === 'zombie' ? ' (a zombie)' : ''}`;
}

/** Spawn a stub and hold it frozen, once it has named itself and waits. */
function plainStub(): RestoreStub {
  const pid = spawnStub(STUB_NAME);
  try {
    awaitStubWaiting(pid);
    return { pid, tracee: Tracee.freeze(pid, { disposable: true }) };
  } catch (err) {
    kill(pid, SIG.SIGKILL);
    waitpid(pid, 0);
    throw err;
  }
}

/** How long a new stub may take to reach its wait (an exec and three system calls). */
const STUB_START_MS = 2000;

/** Wait until stub `pid` blocks reading its lifeline (syscall 0 on descriptor 0). */
function awaitStubWaiting(pid: number): void {
  for (const until = Date.now() + STUB_START_MS; Date.now() < until; sleepMs(0.05)) {
    if (readProcText(pid, 'syscall').startsWith('0 0x0 ')) return;
  }
  throw new FerryError('FERRY_INTERNAL', `restore stub ${pid} did not start within ${STUB_START_MS} ms`);
}

function killStub(stub: RestoreStub): void {
  stub.tracee.kill();
}

/**
 * clone3 inside a stub, through `remote` (a scratch region installed): a child (or thread, with
 * `flags`) with ID `id` when given. Its ID, or -errno.
 */
export function clone3In(remote: RemoteSyscalls, flags: bigint, exitSignal: number, id?: number): bigint {
  let setTid: bigint | undefined;
  if (id !== undefined) {
    const word = Buffer.alloc(4);
    word.writeInt32LE(id);
    setTid = remote.put(word);
  }
  return remote.call(NR.clone3, remote.put(cloneArgs(flags, exitSignal, setTid)), CLONE_ARGS_SIZE);
}

/**
 * Hold process `pid`, which a held stub just made (traced from its start): it is killed when that
 * fails, never left running.
 */
export function adoptChild(pid: number, reap: boolean): Tracee {
  try {
    return Tracee.adopt(pid);
  } catch (err) {
    kill(pid, SIG.SIGKILL); // not reaped yet, so the PID is still this process's
    if (reap) waitpid(pid, 0);
    throw err;
  }
}

/** Inside a frozen stub, clone3() a child with PID `pid`; the child is ptrace-attached to us. */
function cloneWithPid(first: RestoreStub, pid: number): RestoreStub | bigint {
  // With CLONE_PARENT the exit signal must be 0 (EINVAL otherwise): the child takes the first
  // stub's, SIGCHLD, and being no fork for ptrace, reports a clone event.
  ptraceSetOptions(first.pid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACECLONE);
  const remote = RemoteSyscalls.open(first.tracee, { insn: STUB_SYSCALL_ADDRESS });
  remote.installScratch({ size: 1 << 16 });
  const ret = clone3In(remote, CLONE.PARENT, 0, pid);
  if (ret !== BigInt(pid)) {
    remote.close();
    return ret;
  }
  killStub(first);
  const tracee = adoptChild(pid, true); // ferry's child (CLONE_PARENT)
  const child = { pid, tracee };
  try {
    // The child shares the first stub's session; it gets one of its own, as every stub does, and
    // dies with ferry as every stub does (a fork clears the parent-death signal).
    const own = RemoteSyscalls.open(tracee, { insn: STUB_SYSCALL_ADDRESS });
    own.check('prctl(PR_SET_PDEATHSIG)', NR.prctl, PR.SET_PDEATHSIG, SIG.SIGKILL);
    own.check('setsid', NR.setsid);
    own.close();
    return child;
  } catch (err) {
    killStub(child);
    throw err;
  }
}

/** Spawn a stub after asking the kernel for `pid` as the next PID. */
function stubViaNsLastPid(pid: number): RestoreStub | undefined {
  try {
    writeFileSync(NS_LAST_PID, String(pid - 1));
  } catch {
    return undefined;
  }
  const stub = plainStub();
  if (stub.pid === pid) return stub;
  killStub(stub);
  return undefined;
}

/** A frozen stub for the restore of a process whose PID was `original`. */
export function startRestoreStub(
  original: number,
  samePid: SamePid,
  method: PidMethod = 'auto',
): RestoreStub {
  if (samePid === 'no') return plainStub();
  const found = settledPidState(original);
  const taken = (why: string): RestoreStub => {
    if (samePid === 'require')
      throw new FerryError('FERRY_PID_TAKEN', `cannot restore under PID ${original}: ${why}`);
    return plainStub();
  };
  if (found.state !== 'free') return taken(pidTakenBy(found));
  if (method === 'ns_last_pid') return stubViaNsLastPid(original) ?? taken('ns_last_pid did not give it');
  // clone3 with set_tid asks for this PID alone. Writing ns_last_pid instead would move the PID
  // counter of the whole namespace back, and whatever starts next would take just-freed PIDs: it
  // is the way only where clone3 cannot set a PID (ENOSYS before Linux 5.5, or not allowed).
  const first = plainStub();
  let result: RestoreStub | bigint;
  try {
    result = cloneWithPid(first, original);
  } catch (err) {
    killStub(first);
    throw err;
  }
  if (typeof result !== 'bigint') return result;
  if (result !== -17n) {
    killStub(first);
    const failed = `clone3 set_tid failed (${errnoName(Number(-result))})`;
    if (method === 'clone3') return taken(failed);
    return stubViaNsLastPid(original) ?? taken(`${failed} and ns_last_pid did not give it`);
  }
  if (samePid === 'require') {
    killStub(first);
    return taken('another process took it');
  }
  return first;
}
