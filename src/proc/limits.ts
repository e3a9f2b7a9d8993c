// /proc/PID/limits: a header line, then one line per resource: name, soft, hard, [units].
import { parseError } from './parse-error.js';

/** Resources in RLIMIT_* order (0 = CPU ... 15 = RTTIME), by the name the kernel prints. */
export const RLIMIT_NAMES = [
  'Max cpu time',
  'Max file size',
  'Max data size',
  'Max stack size',
  'Max core file size',
  'Max resident set',
  'Max processes',
  'Max open files',
  'Max locked memory',
  'Max address space',
  'Max file locks',
  'Max pending signals',
  'Max msgqueue size',
  'Max nice priority',
  'Max realtime priority',
  'Max realtime timeout',
] as const;

/** RLIM_INFINITY. */
export const RLIM_INFINITY = (1n << 64n) - 1n;

export interface Rlimit {
  resource: number;
  soft: bigint;
  hard: bigint;
}

const LINE = /^(.+?)\s{2,}(unlimited|\d+)\s+(unlimited|\d+)(?:\s+\S+)?\s*$/;

export function parseLimits(text: string, source = 'limits'): Rlimit[] {
  const lines = text.split('\n').filter((l) => l.trim() !== '');
  if (!lines[0]?.startsWith('Limit'))
    throw parseError(source, 1, 'a "Limit  Soft Limit  Hard Limit" header', lines[0] ?? '');
  const value = (v: string): bigint => (v === 'unlimited' ? RLIM_INFINITY : BigInt(v));
  return lines.slice(1).map((line, i) => {
    const m = LINE.exec(line);
    const resource = m ? RLIMIT_NAMES.indexOf(m[1] as (typeof RLIMIT_NAMES)[number]) : -1;
    if (!m || resource < 0) throw parseError(source, i + 2, '"<resource>  <soft>  <hard>  [units]"', line);
    return { resource, soft: value(m[2]!), hard: value(m[3]!) };
  });
}
