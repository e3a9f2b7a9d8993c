// /proc/PID/status: `Key:\tvalue` lines; the fields ferry needs, typed, plus every field as text.
import { parseError } from './parse-error.js';

export interface ProcStatus {
  name: string;
  /** One letter, as in stat: R, S, D, Z, T, t, ... */
  state: string;
  tgid: number;
  pid: number;
  ppid: number;
  tracerPid: number;
  /** Real, effective, saved and filesystem IDs. */
  uids: [number, number, number, number];
  gids: [number, number, number, number];
  groups: number[];
  threads: number;
  sigPending: bigint;
  sigShared: bigint;
  sigBlocked: bigint;
  sigIgnored: bigint;
  sigCaught: bigint;
  capInheritable: bigint;
  capPermitted: bigint;
  capEffective: bigint;
  capBounding: bigint;
  capAmbient: bigint;
  noNewPrivs: boolean;
  /** 0 none, 1 strict, 2 filter. */
  seccomp: number;
  /** Resident anonymous memory, in bytes (0 for a kernel thread, which has none). */
  rssAnon: number;
  /** Every field as the kernel printed it. */
  raw: Record<string, string>;
}

const LINE = /^([A-Za-z_][A-Za-z0-9_]*):\s*(.*)$/;

export function parseStatus(text: string, source = 'status'): ProcStatus {
  const raw: Record<string, string> = {};
  const lines = text.split('\n');
  lines.forEach((line, i) => {
    if (line === '' && i === lines.length - 1) return;
    const m = LINE.exec(line);
    if (!m) throw parseError(source, i + 1, '"Key: value"', line);
    raw[m[1]!] = m[2]!;
  });
  const need = (key: string): string => {
    const value = raw[key];
    if (value === undefined) throw parseError(source, 0, `a "${key}:" line`, '');
    return value;
  };
  const int = (key: string): number => {
    const value = need(key);
    if (!/^-?\d+$/.test(value)) throw parseError(source, 0, `a number after "${key}:"`, value);
    return Number(value);
  };
  const hex = (key: string): bigint => {
    const value = raw[key] ?? '0';
    if (!/^[0-9a-f]+$/i.test(value)) throw parseError(source, 0, `hex digits after "${key}:"`, value);
    return BigInt(`0x${value}`);
  };
  const kilobytes = (key: string): number => {
    const value = raw[key];
    if (value === undefined) return 0;
    const m = /^(\d+) kB$/.exec(value);
    if (!m) throw parseError(source, 0, `a size in kB after "${key}:"`, value);
    return Number(m[1]) * 1024;
  };
  const ids = (key: string): [number, number, number, number] => {
    const parts = need(key).split(/\s+/).map(Number);
    if (parts.length !== 4 || parts.some((n) => !Number.isInteger(n))) {
      throw parseError(source, 0, `four IDs after "${key}:"`, need(key));
    }
    return parts as [number, number, number, number];
  };
  return {
    name: need('Name'),
    state: need('State').charAt(0),
    tgid: int('Tgid'),
    pid: int('Pid'),
    ppid: int('PPid'),
    tracerPid: int('TracerPid'),
    uids: ids('Uid'),
    gids: ids('Gid'),
    groups: (raw.Groups ?? '').split(/\s+/).filter(Boolean).map(Number),
    threads: int('Threads'),
    sigPending: hex('SigPnd'),
    sigShared: hex('ShdPnd'),
    sigBlocked: hex('SigBlk'),
    sigIgnored: hex('SigIgn'),
    sigCaught: hex('SigCgt'),
    capInheritable: hex('CapInh'),
    capPermitted: hex('CapPrm'),
    capEffective: hex('CapEff'),
    capBounding: hex('CapBnd'),
    capAmbient: hex('CapAmb'),
    noNewPrivs: raw.NoNewPrivs === '1',
    seccomp: raw.Seccomp === undefined ? 0 : int('Seccomp'),
    rssAnon: kilobytes('RssAnon'),
    raw,
  };
}
