// What lets a thread go on untouched when ferry goes away while the thread runs ferry's calls and no
// scratch region of ferry's holds its rescue yet (or any more): the process's own `rt_sigreturn`
// instructions (the signal-return trampoline every libc and the Go runtime have) and a signal frame
// placed on the thread's stack, below its red zone, where the kernel would place one to deliver a
// signal.
import { FerryError } from '../errors.js';
import type { MapsEntry } from '../proc/maps.js';
import { processVmReadv, processVmWritev } from '../sys/process-vm.js';
import { SIGFRAME_ALIGN } from './sigframe.js';

/** `mov $15, %rax; syscall` and `mov $15, %eax; syscall`: glibc's and musl's __restore_rt, Go's sigreturn. */
const SIGRETURN_GADGETS = [Buffer.from('48c7c00f0000000f05', 'hex'), Buffer.from('b80f0000000f05', 'hex')];

/** The x86_64 ABI's red zone below rsp, which a function may use without moving rsp. */
const RED_ZONE = 128n;

/** Read at most this much of one mapping when looking for a gadget. */
const SCAN_LIMIT = 4 << 20;

/**
 * Where the process has a `rt_sigreturn` gadget: a readable, executable file mapping holding one of
 * the sequences above, smallest mapping first (the dynamic loader's, typically). Undefined if none.
 */
export function findSigreturnGadget(pid: number, maps: readonly MapsEntry[]): bigint | undefined {
  const code = maps
    .filter((m) => m.perms.startsWith('r-x') && m.inode !== 0n)
    .sort((a, b) => Number(a.end - a.start - (b.end - b.start)));
  for (const m of code) {
    const len = Number(m.end - m.start < BigInt(SCAN_LIMIT) ? m.end - m.start : BigInt(SCAN_LIMIT));
    const buf = Buffer.alloc(len);
    let got: number;
    try {
      got = processVmReadv(pid, buf, [{ addr: m.start, len }]);
    } catch {
      continue; // not readable after all: the next
    }
    for (const gadget of SIGRETURN_GADGETS) {
      const at = buf.subarray(0, got).indexOf(gadget);
      if (at >= 0) return m.start + BigInt(at);
    }
  }
  return undefined;
}

/** Bytes of a thread's stack that a frame covers for a while, and what they held before. */
export class StackFrame {
  private constructor(
    private readonly pid: number,
    readonly at: bigint,
    private readonly saved: Buffer,
  ) {}

  /**
   * Room for `size` bytes below the red zone of the stack at `rsp`, 64-byte aligned, inside the
   * writable mapping that holds rsp; what is there is kept to be put back. Undefined if the mapping
   * has no such room.
   */
  static below(pid: number, rsp: bigint, size: number, maps: readonly MapsEntry[]): StackFrame | undefined {
    const at = (rsp - RED_ZONE - BigInt(size)) & ~BigInt(SIGFRAME_ALIGN - 1);
    const vma = maps.find((m) => m.start <= rsp - RED_ZONE && rsp - RED_ZONE <= m.end);
    if (!vma || vma.perms[1] !== 'w' || at < vma.start) return undefined;
    const saved = Buffer.alloc(size);
    if (processVmReadv(pid, saved, [{ addr: at, len: size }]) !== size) return undefined;
    return new StackFrame(pid, at, saved);
  }

  write(frame: Buffer): void {
    if (frame.length > this.saved.length)
      throw new FerryError('FERRY_INTERNAL', 'signal frame larger than the room made for it');
    processVmWritev(this.pid, frame, [{ addr: this.at, len: frame.length }]);
  }

  /** Put back what the stack held. */
  restore(): void {
    processVmWritev(this.pid, this.saved, [{ addr: this.at, len: this.saved.length }]);
  }
}
