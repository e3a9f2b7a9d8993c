// /proc/PID/stat: one line of space-separated fields; the command name sits in parentheses and may
// itself contain spaces and parentheses, so it is cut at the last ')'.
import { parseError } from './parse-error.js';

export interface ProcStat {
  pid: number;
  comm: string;
  /** One letter: R, S, D, Z, T, t, X, I, ... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  ttyNr: number;
  /** The foreground process group of its controlling terminal, or -1. */
  tpgid: number;
  flags: number;
  numThreads: number;
  /** CPU time in user and kernel mode, in clock ticks (sysconf(_SC_CLK_TCK), 100 on Linux). */
  utime: number;
  stime: number;
  startTime: bigint;
  vsize: bigint;
  rssPages: bigint;
  startCode: bigint;
  endCode: bigint;
  startStack: bigint;
  startData: bigint;
  endData: bigint;
  startBrk: bigint;
  argStart: bigint;
  argEnd: bigint;
  envStart: bigint;
  envEnd: bigint;
  exitCode: number;
}

/** PF_KTHREAD in the stat flags field: the task is a kernel thread. */
export const PF_KTHREAD = 0x00200000;

const FORM = '"pid (comm) state ppid ..." with 52 fields';

export function parseStat(text: string, source = 'stat'): ProcStat {
  const line = text.trimEnd();
  const open = line.indexOf(' (');
  const close = line.lastIndexOf(')');
  const rest = close > open && open > 0 ? line.slice(close + 2).split(' ') : [];
  // proc(5) numbers fields from 1: rest[0] is field 3 (state), rest[49] field 52 (exit_code).
  const wellFormed =
    /^\d+$/.test(line.slice(0, open)) &&
    rest.length >= 50 &&
    /^[A-Za-z]$/.test(rest[0]!) &&
    rest.slice(1).every((f) => /^-?\d+$/.test(f));
  if (!wellFormed) throw parseError(source, 1, FORM, line);
  const num = (n: number): number => Number(rest[n - 3]);
  const big = (n: number): bigint => BigInt(rest[n - 3]!);
  return {
    pid: Number(line.slice(0, open)),
    comm: line.slice(open + 2, close),
    state: rest[0]!,
    ppid: num(4),
    pgrp: num(5),
    session: num(6),
    ttyNr: num(7),
    tpgid: num(8),
    flags: num(9),
    numThreads: num(20),
    utime: num(14),
    stime: num(15),
    startTime: big(22),
    vsize: big(23),
    rssPages: big(24),
    startCode: big(26),
    endCode: big(27),
    startStack: big(28),
    startData: big(45),
    endData: big(46),
    startBrk: big(47),
    argStart: big(48),
    argEnd: big(49),
    envStart: big(50),
    envEnd: big(51),
    exitCode: num(52),
  };
}
