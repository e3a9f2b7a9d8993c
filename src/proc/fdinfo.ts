// /proc/PID/fdinfo/FD: `key:\tvalue` lines; some kinds (epoll, inotify, fanotify, timerfd) add
// repeated records such as `tfd: ...` or `inotify wd:...`, kept in order in `records`, as are the
// `lock:` lines of the file locks the descriptor's file has (proc/locks.ts).
import { parseError } from './parse-error.js';

export interface Fdinfo {
  pos: bigint;
  /** open(2) flags; the kernel prints them in octal. */
  flags: number;
  mntId: number;
  ino: bigint;
  /** Single-valued fields other than the above, by key. */
  fields: Record<string, string>;
  /** Repeated records: `{ key: 'tfd', value: '5 events: 19 data: ...' }`. */
  records: { key: string; value: string }[];
}

/** `key: value`; a key may have spaces in it (a timerfd's `settime flags`). */
const LINE = /^([A-Za-z_][A-Za-z0-9_ -]*?):\s*(.*)$/;
const RECORD_KEYS = new Set(['tfd', 'inotify', 'fanotify', 'fanotify ino', 'lock']);

export function parseFdinfo(text: string, source = 'fdinfo'): Fdinfo {
  const fields: Record<string, string> = {};
  const records: { key: string; value: string }[] = [];
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '' && i === lines.length - 1) return;
    const record = /^(inotify|fanotify) (.*)$/.exec(line);
    if (record) {
      records.push({ key: record[1]!, value: record[2]! });
      return;
    }
    const m = LINE.exec(line);
    if (!m) throw parseError(source, i + 1, '"key: value"', line);
    if (RECORD_KEYS.has(m[1]!)) records.push({ key: m[1]!, value: m[2]! });
    else fields[m[1]!] = m[2]!;
  });
  const take = (key: string, pattern: RegExp): string => {
    const value = fields[key];
    if (value === undefined || !pattern.test(value)) {
      throw parseError(source, 0, `"${key}:" with a ${pattern.source} value`, value ?? '');
    }
    delete fields[key];
    return value;
  };
  return {
    pos: BigInt(take('pos', /^\d+$/)),
    flags: parseInt(take('flags', /^[0-7]+$/), 8),
    mntId: Number(take('mnt_id', /^\d+$/)),
    ino: 'ino' in fields ? BigInt(take('ino', /^\d+$/)) : 0n,
    fields,
    records,
  };
}
