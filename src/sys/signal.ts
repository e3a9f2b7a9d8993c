// Signals: numbers and names, kill and tgkill; and ending this process at once.
import { syscall } from './call.js';
import { libcLoaded, trySyscall } from './libc.js';
import { NR } from './nr.js';

export const SIG = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
  SIGSTKFLT: 16,
  SIGCHLD: 17,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
  SIGTTIN: 21,
  SIGTTOU: 22,
  SIGURG: 23,
  SIGXCPU: 24,
  SIGXFSZ: 25,
  SIGVTALRM: 26,
  SIGPROF: 27,
  SIGWINCH: 28,
  SIGIO: 29,
  SIGPWR: 30,
  SIGSYS: 31,
} as const;

/** The kernel's highest signal number (SIGRTMAX). */
export const NSIG = 64;

const names = new Map<number, string>(Object.entries(SIG).map(([name, nr]) => [nr, name]));

/** 'SIGUSR1' for 10, 'SIGRT5' for 37 (SIGRTMIN is 32 in the kernel's numbering). */
export function signalName(signal: number): string {
  return names.get(signal) ?? (signal >= 32 && signal <= NSIG ? `SIGRT${signal - 32}` : `signal ${signal}`);
}

/** Signal one process: never a group, which a PID of 0 or less would reach. */
export function kill(pid: number, signal: number): void {
  if (!Number.isInteger(pid) || pid <= 0) throw new RangeError(`kill: ${pid} is not the PID of one process`);
  syscall(NR.kill, 'kill', () => [String(pid), signalName(signal)], pid, signal);
}

/**
 * Signal every process of group `pgid`. Only for a group whose leader is the caller's child, not yet
 * reaped: its number cannot have been taken by another group meanwhile.
 */
export function killGroup(pgid: number, signal: number): void {
  if (!Number.isInteger(pgid) || pgid <= 1) throw new RangeError(`kill: ${pgid} is not a process group`);
  syscall(NR.kill, 'kill', () => [String(-pgid), signalName(signal)], -pgid, signal);
}

export function tgkill(tgid: number, tid: number, signal: number): void {
  syscall(NR.tgkill, 'tgkill', () => [String(tgid), String(tid), signalName(signal)], tgid, tid, signal);
}

/**
 * End this process with `code` now (exit_group): no 'exit' event, none of Node's teardown (its
 * threads joined, its heap freed: about 1 ms here). Only where libc is open already, since opening
 * it costs more; returns (having done nothing) where it is not.
 */
export function exitNowIfLoaded(code: number): void {
  if (libcLoaded()) trySyscall(NR.exit_group, code);
}
