// sched_getattr(2) and sched_setattr(2) on any thread: its scheduling policy, nice or real-time
// priority, deadline parameters and utilization clamps.
import { syscall } from './call.js';
import { NR } from './nr.js';

/** struct sched_attr, as far as this kernel has it (SCHED_ATTR_SIZE_VER1). */
const SIZE = 56;
/** sched_flags: keep the utilization clamps given. */
export const SCHED_FLAG_UTIL_CLAMP = 0x20n | 0x40n;
/** sched_flags: a fork gets the default policy. */
export const SCHED_FLAG_RESET_ON_FORK = 0x01n;
export const SCHED = { OTHER: 0, FIFO: 1, RR: 2, BATCH: 3, IDLE: 5, DEADLINE: 6 } as const;

export interface SchedAttr {
  policy: number;
  flags: bigint;
  nice: number;
  priority: number;
  runtime: bigint;
  deadline: bigint;
  period: bigint;
  utilMin: number;
  utilMax: number;
}

export function schedGetattr(tid: number): SchedAttr {
  const b = Buffer.alloc(SIZE);
  syscall(NR.sched_getattr, 'sched_getattr', () => [String(tid)], tid, b, SIZE, 0);
  return {
    policy: b.readUInt32LE(4),
    flags: b.readBigUInt64LE(8),
    nice: b.readInt32LE(16),
    priority: b.readUInt32LE(20),
    runtime: b.readBigUInt64LE(24),
    deadline: b.readBigUInt64LE(32),
    period: b.readBigUInt64LE(40),
    utilMin: b.readUInt32LE(48),
    utilMax: b.readUInt32LE(52),
  };
}

export function schedSetattr(tid: number, attr: SchedAttr): void {
  const b = Buffer.alloc(SIZE);
  b.writeUInt32LE(SIZE, 0);
  b.writeUInt32LE(attr.policy, 4);
  b.writeBigUInt64LE(attr.flags, 8);
  b.writeInt32LE(attr.nice, 16);
  b.writeUInt32LE(attr.priority, 20);
  b.writeBigUInt64LE(attr.runtime, 24);
  b.writeBigUInt64LE(attr.deadline, 32);
  b.writeBigUInt64LE(attr.period, 40);
  b.writeUInt32LE(attr.utilMin, 48);
  b.writeUInt32LE(attr.utilMax, 52);
  syscall(NR.sched_setattr, 'sched_setattr', () => [String(tid)], tid, b, 0);
}
