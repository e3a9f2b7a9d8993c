// kcmp(2): whether two descriptors of traced processes are one open file.
import { syscall } from './call.js';
import { NR } from './nr.js';

const KCMP_FILE = 0;

/** True when descriptor `a` of `pidA` and `b` of `pidB` share one open file description. */
export function sameOpenFile(pidA: number, a: number, pidB: number, b: number): boolean {
  const describe = (): string[] => [String(pidA), String(pidB), 'KCMP_FILE', String(a), String(b)];
  return syscall(NR.kcmp, 'kcmp', describe, pidA, pidB, KCMP_FILE, a, b) === 0;
}
