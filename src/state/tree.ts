// Process trees: a process is dumped with its descendants, and restored as the same tree, each
// process forked from its parent's stub, with the sessions and process groups they had, and the
// zombies they had not reaped yet.
import { readFileSync } from 'node:fs';
import { FerryError, isFerryError } from '../errors.js';
import { array, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { listThreads, readProcText } from '../proc/files.js';
import { parseStat, type ProcStat } from '../proc/stat.js';
import { SysError } from '../sys/errno.js';
import { KCMP, shareObject } from '../sys/kcmp.js';
import { NR } from '../sys/nr.js';
import { PR } from '../sys/prctl.js';
import { PTRACE_O, ptraceSetOptions, ptraceSetSigmask } from '../sys/ptrace.js';
import { NO_RESTART } from '../sys/regs.js';
import { SIG } from '../sys/signal.js';
import { RemoteSyscalls } from '../tracee/remote.js';
import { Tracee } from '../tracee/tracee.js';
import { STUB_SYSCALL_ADDRESS } from '../stub/stub.js';
import { adoptChild, clone3In, pidTakenBy, settledPidState } from '../stub/restore-stub.js';
import { unsupportedMessage } from './context.js';

const PID = integer(1, 2 ** 22);

/** One process of the tree, parents before their children; the first is the dumped process. */
const memberRecord = object({
  pid: PID,
  ppid: integer(0, 2 ** 22),
  /** 0: a group or session whose leader is outside ferry's PID namespace (as in a container). */
  pgid: integer(0, 2 ** 22),
  sid: integer(0, 2 ** 22),
  command: string({ max: 16, description: 'comm: the process name' }),
  /** A zombie's wait status (exit code << 8, or the signal that killed it); null while it runs. */
  exit: nullable(integer(0, 0xffff)),
  /** The signal that had it stopped (SIGSTOP, SIGTSTP, SIGTTIN, SIGTTOU), null if it was not. */
  stopped: nullable(integer(1, 64)),
});

export const treeRecord = array(memberRecord, { max: 1 << 15 });
export type TreeRecord = Infer<typeof treeRecord>;
export type MemberRecord = Infer<typeof memberRecord>;

/** A process of a frozen tree: held by `tracee`, or a zombie with nothing to hold. */
export interface Member {
  record: MemberRecord;
  tracee: Tracee | undefined;
}

function statOf(pid: number): ProcStat | undefined {
  try {
    return parseStat(readFileSync(`/proc/${pid}/stat`, 'latin1'), `/proc/${pid}/stat`);
  } catch {
    return undefined; // gone (reaped)
  }
}

/** Children of a process (of a frozen one, for good: they cannot change while it is frozen). */
export function childrenOf(pid: number): number[] {
  const out = new Set<number>();
  for (const tid of listThreads(pid)) {
    const text = readProcText(pid, `task/${tid}/children`).trim();
    for (const child of text === '' ? [] : text.split(' ')) out.add(Number(child));
  }
  return [...out].sort((a, b) => a - b);
}

function refuse(pid: number, what: string, why: string): never {
  throw new FerryError('FERRY_UNSUPPORTED_STATE', unsupportedMessage(pid, what, why));
}

function recordOf(stat: ProcStat, exit: number | null, tracee?: Tracee): MemberRecord {
  const { pid, ppid, pgrp: pgid, session: sid, comm: command } = stat;
  return { pid, ppid, pgid, sid, command, exit, stopped: tracee?.stopSignal ?? null };
}

/** A child that has exited: a zombie whose parent has not reaped it. */
function zombie(pid: number, stat: ProcStat): Member {
  if (stat.numThreads > 1)
    refuse(
      pid,
      'it is a zombie whose threads run on',
      '(its main thread exited), which ferry cannot restore',
    );
  return { record: recordOf(stat, stat.exitCode), tracee: undefined };
}

/**
 * Freeze every descendant of the process frozen as `rootTracee`, parents first: a frozen process
 * forks no more, so its children are listed once it is frozen. With `oneOnly` (why), children are
 * refused instead. On failure every descendant frozen so far runs on.
 */
export function freezeTree(rootTracee: Tracee, oneOnly: string | undefined): Member[] {
  const root = rootTracee.pid;
  const members: Member[] = [{ record: recordOf(statOf(root)!, null, rootTracee), tracee: rootTracee }];
  try {
    for (let i = 0; i < members.length; i++) {
      const parent = members[i]!;
      if (!parent.tracee) continue;
      const children = childrenOf(parent.record.pid);
      if (children.length > 0 && oneOnly !== undefined)
        refuse(root, `it has child processes (${children.join(', ')}),`, oneOnly);
      for (const pid of children) {
        const member = freezeChild(pid, rootTracee);
        if (member) members.push(member);
      }
    }
    checkTree(members.map((m) => m.record));
    for (const m of members) if (m.tracee) refuseSharing(m.record);
    return members;
  } catch (err) {
    for (const m of members.slice(1).reverse()) m.tracee?.release();
    throw err;
  }
}

/** Freeze a descendant as the root was frozen (watched, warned). */
function freezeChild(pid: number, root: Tracee): Member | undefined {
  const before = statOf(pid);
  if (!before) return undefined;
  if (before.state === 'Z') return zombie(pid, before);
  try {
    const tracee = Tracee.freeze(pid, { watch: root.watch, onWarning: root.warn });
    return { record: recordOf(statOf(pid)!, null, tracee), tracee };
  } catch (err) {
    if (!isFerryError(err, 'FERRY_PROCESS_EXITED')) throw err;
    const after = statOf(pid); // it exited meanwhile: a zombie now, or reaped
    return after ? zombie(pid, after) : undefined;
  }
}

const SHARED = [
  [KCMP.VM, 'its memory (CLONE_VM)'],
  [KCMP.FILES, 'its descriptor table (CLONE_FILES)'],
  [KCMP.FS, 'its working directory and umask (CLONE_FS)'],
  [KCMP.SIGHAND, 'its signal handlers (CLONE_SIGHAND)'],
] as const;

/**
 * Each process is restored with its own memory, descriptor table, filesystem context and signal
 * handlers: one that shares any with its parent (cloned so, not as a thread) is refused.
 */
function refuseSharing(m: MemberRecord): void {
  if (m.ppid <= 0) return;
  for (const [type, what] of SHARED) {
    let shared: boolean;
    try {
      shared = shareObject(m.pid, m.ppid, type);
    } catch {
      return; // its parent is not ours to look at (or gone): nothing is shared with it
    }
    if (shared)
      refuse(m.pid, `it shares ${what} with its parent ${m.ppid},`, 'which ferry cannot restore yet');
  }
}

/**
 * Sessions and groups come back through setsid and setpgid, which reach only what is in the tree:
 * each must be led by a process of the tree or be the one the dumped process was in (a restore puts
 * the tree in a session of its own).
 */
function checkTree(members: readonly MemberRecord[]): void {
  const root = members[0]!;
  const byPid = new Map(members.map((m) => [m.pid, m]));
  for (const m of members) {
    if (m.sid !== root.sid && !byPid.has(m.sid))
      refuse(m.pid, `it is in session ${m.sid}`, 'whose leader is not in the dumped tree');
    if (m.pgid !== root.pgid && !byPid.has(m.pgid))
      refuse(m.pid, `it is in process group ${m.pgid}`, 'whose leader is not in the dumped tree');
    // A session is inherited: its leader must be this process or an ancestor.
    let up: MemberRecord | undefined = m;
    while (up && up.pid !== m.sid) up = byPid.get(up.ppid);
    if (byPid.has(m.sid) && !up)
      refuse(m.pid, `it is in session ${m.sid}`, 'led by a process that is not its ancestor');
  }
}

/** A process of the tree being restored: its stub, under its new PID. */
export interface Made {
  record: MemberRecord;
  pid: number;
  tracee: Tracee;
}

/** Run `fn` inside a held stub, with a small scratch region when it needs memory there. */
function inStub<T>(stub: Tracee, fn: (remote: RemoteSyscalls) => T, scratch = false): T {
  const remote = RemoteSyscalls.open(stub, { insn: STUB_SYSCALL_ADDRESS });
  try {
    if (scratch) remote.installScratch({ size: 1 << 12 });
    const result = fn(remote);
    if (scratch) remote.removeScratch();
    return result;
  } finally {
    remote.close();
  }
}

/** clone3 a child of the stub held by `parent`, with PID `pid`: its PID or -errno. */
function forkIn(parent: Tracee, pid: number): bigint {
  ptraceSetOptions(parent.pid, PTRACE_O.TRACESYSGOOD | PTRACE_O.TRACEFORK);
  return inStub(parent, (remote) => clone3In(remote, 0n, SIG.SIGCHLD, pid), true);
}

/**
 * Fork the rest of the tree from the root's stub, each process from its parent's stub before any
 * is restored. Each keeps its PID, which its parent knows it by (waitpid, kill): one that is taken
 * fails the restore. A session leader makes its session before it forks its children. `made` gets
 * each process as it is forked, so that a failure can kill them all.
 */
export function forkTree(
  tree: TreeRecord,
  root: Made,
  made: Made[],
  /** Run in each session leader's stub right after its setsid, before its children are made. */
  onSession?: (remote: RemoteSyscalls, record: MemberRecord) => void,
): void {
  const byOriginal = new Map<number, Made>([[root.record.pid, root]]);
  for (const record of tree.slice(1)) {
    const parent = byOriginal.get(record.ppid);
    if (!parent)
      throw new FerryError(
        'FERRY_IMAGE_INVALID',
        `process ${record.pid}'s parent ${record.ppid} is not in the image`,
      );
    const taken = (why: string): never => {
      throw new FerryError(
        'FERRY_PID_TAKEN',
        `cannot restore process ${record.pid} (${record.command}) under its PID, which its parent knows it by: ${why}`,
      );
    };
    const holder = settledPidState(record.pid);
    if (holder.state !== 'free') taken(pidTakenBy(holder));
    const pid = forkIn(parent.tracee, record.pid);
    if (pid < 0n) {
      if (pid === -17n) taken('another process took it');
      throw new SysError(`clone3 of process ${record.pid} in process ${parent.pid}`, [], Number(-pid));
    }
    const child: Made = { record, pid: Number(pid), tracee: adoptChild(Number(pid), false) };
    made.push(child);
    byOriginal.set(record.pid, child);
    if (record.sid === record.pid)
      inStub(child.tracee, (r) => {
        r.check('setsid', NR.setsid);
        onSession?.(r, record);
      });
  }
  joinGroups(tree, byOriginal);
}

/** Put each process in its group: group leaders first, then their members. */
function joinGroups(tree: TreeRecord, byOriginal: ReadonlyMap<number, Made>): void {
  const root = byOriginal.get(tree[0]!.pid)!;
  const rootGroup = statOf(root.pid)!.pgrp;
  const leadersFirst = [...tree].sort((a, b) => Number(a.pgid !== a.pid) - Number(b.pgid !== b.pid));
  for (const record of leadersFirst) {
    const made = byOriginal.get(record.pid)!;
    const leader = byOriginal.get(record.pgid);
    const group = leader ? leader.pid : rootGroup;
    if (statOf(made.pid)?.pgrp !== group)
      inStub(made.tracee, (r) => r.check(`setpgid(0, ${group})`, NR.setpgid, 0, group));
  }
}

/**
 * Let the zombies of the tree exit, as they had: with their exit code, or killed by their signal
 * (not dumping core). Each is sent off running one syscall in its stub; its parent, restored and
 * still held, finds it when it runs.
 */
export function exitZombies(zombies: readonly Made[]): void {
  for (const z of zombies) {
    const status = z.record.exit!;
    const signal = status & 0x7f;
    inStub(
      z.tracee,
      (r) => {
        r.check('prctl(PR_SET_NAME)', NR.prctl, PR.SET_NAME, r.putString(z.record.command));
        if (signal === 0) return;
        r.check('prctl(PR_SET_DUMPABLE, 0)', NR.prctl, PR.SET_DUMPABLE, 0);
        // The signal must kill it: its default action, and not blocked (the stub blocks them all).
        r.check(`rt_sigaction(${signal}, SIG_DFL)`, NR.rt_sigaction, signal, r.put(Buffer.alloc(32)), 0, 8);
      },
      true,
    );
    if (signal !== 0) ptraceSetSigmask(z.pid, 0n);
    const [nr, rdi, rsi] = signal === 0 ? [NR.exit_group, status >> 8, 0] : [NR.kill, z.pid, signal];
    z.tracee.replaceSavedRegs(z.pid, {
      ...z.tracee.savedRegs(z.pid),
      rip: STUB_SYSCALL_ADDRESS,
      rax: BigInt(nr),
      orig_rax: NO_RESTART,
      rdi: BigInt(rdi),
      rsi: BigInt(rsi),
    });
    z.tracee.release();
  }
}
