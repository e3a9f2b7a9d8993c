// seccomp filters: each thread's chain of classic BPF programs, read at dump with
// PTRACE_SECCOMP_GET_FILTER while ferry holds the process with its filters suspended
// (PTRACE_O_SUSPEND_SECCOMP: nothing ferry runs inside meets them), and installed again by the
// restored thread just before its credentials, oldest first. Threads that share one chain get it
// from the first thread with SECCOMP_FILTER_FLAG_TSYNC, so that they share it again (a later TSYNC
// of the program's own needs that). A thread in strict mode enters it again, last.
import { NR } from '../sys/nr.js';
import { PTRACE_O, ptraceSetOptions } from '../sys/ptrace.js';
import type { RemoteCall, RemoteSyscalls } from '../tracee/remote.js';
import type { ThreadRecord } from './thread.js';

const SECCOMP_SET_MODE_STRICT = 0;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_TSYNC = 1;

type Chain = NonNullable<ThreadRecord['seccomp']>;

const sameChain = (a: Chain, b: Chain | null): boolean =>
  b !== null &&
  a.length === b.length &&
  a.every((f, i) => f.flags === b[i]!.flags && f.program.equals(b[i]!.program));

/**
 * For each thread (`tids`, `channels` in the order of `threads`), the calls that install its
 * filters: none for a thread without, all on the first thread when every thread has the same chain;
 * or that enter strict mode. Each such thread is first held with seccomp suspended.
 */
export function seccompCalls(
  threads: readonly ThreadRecord[],
  tids: readonly number[],
  channels: readonly RemoteSyscalls[],
): RemoteCall[][] {
  const calls = threads.map((): RemoteCall[] => []);
  const first = threads[0]!.seccomp;
  threads.forEach((t, i) => {
    if (!t.seccompStrict) return;
    ptraceSetOptions(tids[i]!, PTRACE_O.TRACESYSGOOD | PTRACE_O.SUSPEND_SECCOMP);
    calls[i]!.push({
      name: 'seccomp(SET_MODE_STRICT)',
      nr: NR.seccomp,
      args: [SECCOMP_SET_MODE_STRICT, 0, 0],
    });
  });
  if (threads.every((t) => t.seccomp === null)) return calls;
  const shared = first !== null && threads.every((t) => sameChain(first, t.seccomp));
  threads.forEach((t, i) => {
    if (t.seccomp === null || (shared && i > 0)) return;
    for (const tid of shared ? tids : [tids[i]!])
      ptraceSetOptions(tid, PTRACE_O.TRACESYSGOOD | PTRACE_O.SUSPEND_SECCOMP);
    const remote = channels[i]!;
    for (const [n, f] of t.seccomp.entries()) {
      const prog = Buffer.alloc(16);
      prog.writeUInt16LE(f.program.length / 8, 0);
      prog.writeBigUInt64LE(remote.put(f.program), 8);
      calls[i]!.push({
        name: `seccomp(SET_MODE_FILTER, filter ${n + 1} of ${t.seccomp.length})`,
        nr: NR.seccomp,
        args: [SECCOMP_SET_MODE_FILTER, f.flags | (shared ? SECCOMP_FILTER_FLAG_TSYNC : 0), remote.put(prog)],
      });
    }
  });
  return calls;
}
