// Per-thread kernel state that another process may read directly (with ptrace access).
import { syscall } from './call.js';

import { NR } from './nr.js';

/** get_robust_list(2) of another thread: its robust futex list head and the head's size. */
export function getRobustList(tid: number): { head: bigint; len: number } {
  const head = Buffer.alloc(8);
  const len = Buffer.alloc(8);
  syscall(NR.get_robust_list, 'get_robust_list', () => [String(tid)], tid, head, len);
  return { head: head.readBigUInt64LE(0), len: Number(len.readBigUInt64LE(0)) };
}
