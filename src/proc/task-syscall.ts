// /proc/PID/task/TID/syscall: what a thread is doing: `running`, or `nr arg1..arg6 sp pc` when
// blocked in a system call, or `-1 sp pc` when stopped outside one.
import { parseError } from './parse-error.js';

export type TaskSyscall =
  | { state: 'running' }
  | { state: 'blocked'; nr: number; args: bigint[]; sp: bigint; pc: bigint }
  | { state: 'user'; sp: bigint; pc: bigint };

const HEXNUM = /^0x[0-9a-f]+$/;

export function parseTaskSyscall(text: string, source = 'syscall'): TaskSyscall {
  const line = text.trim();
  if (line === 'running') return { state: 'running' };
  const parts = line.split(' ');
  const [nr, ...rest] = parts;
  if (nr === '-1' && rest.length === 2 && rest.every((p) => HEXNUM.test(p))) {
    return { state: 'user', sp: BigInt(rest[0]!), pc: BigInt(rest[1]!) };
  }
  if (nr !== undefined && /^\d+$/.test(nr) && rest.length === 8 && rest.every((p) => HEXNUM.test(p))) {
    const values = rest.map((p) => BigInt(p));
    return { state: 'blocked', nr: Number(nr), args: values.slice(0, 6), sp: values[6]!, pc: values[7]! };
  }
  throw parseError(source, 1, '"running", "-1 sp pc" or "nr arg1..arg6 sp pc"', line);
}
