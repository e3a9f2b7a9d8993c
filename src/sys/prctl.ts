// prctl(2) options ferry uses.
import { syscall } from './call.js';
import type { SysArg } from './libc.js';
import { NR } from './nr.js';

export const PR = {
  SET_PDEATHSIG: 1,
  SET_NAME: 15,
  GET_NAME: 16,
  GET_DUMPABLE: 3,
  SET_DUMPABLE: 4,
  SET_KEEPCAPS: 8,
  CAPBSET_DROP: 24,
  GET_SECUREBITS: 27,
  SET_SECUREBITS: 28,
  SET_NO_NEW_PRIVS: 38,
  CAP_AMBIENT: 47,
  SET_MM: 35,
  GET_TID_ADDRESS: 40,
  GET_NO_NEW_PRIVS: 39,
  GET_CHILD_SUBREAPER: 37,
  SET_CHILD_SUBREAPER: 36,
  GET_PDEATHSIG: 2,
  SET_TIMERSLACK: 29,
  GET_TIMERSLACK: 30,
  SET_THP_DISABLE: 41,
  GET_THP_DISABLE: 42,
} as const;

/** PR_CAP_AMBIENT sub-options. */
export const PR_CAP_AMBIENT = { RAISE: 2, CLEAR_ALL: 4 } as const;

/** Securebits (prctl PR_GET/SET_SECUREBITS). */
export const SECBIT = { KEEP_CAPS: 1 << 4, KEEP_CAPS_LOCKED: 1 << 5 } as const;

/** PR_SET_MM sub-options. */
export const PR_SET_MM = { MAP: 14, MAP_SIZE: 15 } as const;

export function prctl(option: number, name: string, ...args: SysArg[]): number {
  return syscall(NR.prctl, 'prctl', () => [name], option, ...args);
}
