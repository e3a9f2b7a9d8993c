// The stub: a process of our own making, with no libc and nothing mapped but its code, a stack and
// the kernel's vDSO. It waits in pause(2) until ferry seizes it and turns it into something else
// (a restored process) or uses it to probe what the kernel allows (`ferry check`).
import { closeSync, writeSync } from 'node:fs';
import { memfdCreate, MFD_CLOEXEC } from '../sys/memfd.js';
import { posixSpawn } from '../sys/spawn.js';
import { buildElf, ELF_CODE_OFFSET } from './elf.js';

/** Where the stub's code is loaded: low, so it rarely overlaps what an image wants to map. */
export const STUB_BASE = 0x10000n;

const NAME_OFFSET = 28;
const SYSCALL_OFFSET = 24n;

/**
 * The stub's code: name itself (exec names a process after the basename of the path, here a
 * /proc/PID/fd/N number), then pause forever.
 *    0: mov edi, PR_SET_NAME      5: lea rsi, [rip + name]    12: mov eax, SYS_prctl    17: syscall
 *   19: mov eax, SYS_pause       24: syscall                  26: jmp 19                28: name
 */
function stubCode(name: string): Buffer {
  // prettier-ignore
  const head = Buffer.from([
    0xbf, 0x0f, 0x00, 0x00, 0x00,
    0x48, 0x8d, 0x35, NAME_OFFSET - 12, 0x00, 0x00, 0x00,
    0xb8, 0x9d, 0x00, 0x00, 0x00,
    0x0f, 0x05,
    0xb8, 0x22, 0x00, 0x00, 0x00,
    0x0f, 0x05,
    0xeb, 0xf7,
  ]);
  return Buffer.concat([head, Buffer.from(`${name.slice(0, 15)}\0`, 'latin1')]);
}

/** Address of the stub's `syscall` instruction (in its pause loop). */
export const STUB_SYSCALL_ADDRESS = STUB_BASE + BigInt(ELF_CODE_OFFSET) + SYSCALL_OFFSET;

/**
 * Start a stub in a new session, with no descriptors and default signal dispositions. Returns its
 * PID; the caller owns it (must kill and reap it). The path names the memfd through this process's
 * /proc entry, which the child's closefrom() cannot close before exec reads it.
 */
export function spawnStub(name = 'ferry-stub'): number {
  const memfd = memfdCreate(name, MFD_CLOEXEC);
  try {
    writeSync(memfd, buildElf(stubCode(name), STUB_BASE).bytes);
    return posixSpawn(`/proc/${process.pid}/fd/${memfd}`, [name], {
      setsid: true,
      fileActions: [{ kind: 'closefrom', fd: 0 }],
    });
  } finally {
    closeSync(memfd);
  }
}
