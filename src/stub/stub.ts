// Programs of our own making, with no libc and nothing mapped but their code, a stack and the
// kernel's vDSO. The stub waits in pause(2) until ferry seizes it and turns it into something else
// (a restored process) or probes the kernel with it (`ferry check`); the demo workload counts.
import { closeSync, writeSync } from 'node:fs';
import { memfdCreate, MFD_CLOEXEC } from '../sys/memfd.js';
import { posixSpawn, type FileAction } from '../sys/spawn.js';
import { buildElf, ELF_CODE_OFFSET } from './elf.js';

/** Where these programs are loaded: low, so they rarely overlap what an image wants to map. */
export const STUB_BASE = 0x10000n;

const PROLOGUE_SIZE = 19;

/**
 * `body` after a prologue that names the process (exec names it after the basename of the path,
 * here a /proc/PID/fd/N number), with the name stored after the body:
 *    0: mov edi, PR_SET_NAME     5: lea rsi, [rip + name]    12: mov eax, SYS_prctl    17: syscall
 */
export function namedProgram(name: string, body: Buffer): Buffer {
  const disp = PROLOGUE_SIZE + body.length - 12;
  // prettier-ignore
  const prologue = Buffer.from([
    0xbf, 0x0f, 0x00, 0x00, 0x00,
    0x48, 0x8d, 0x35, disp & 0xff, (disp >> 8) & 0xff, 0x00, 0x00,
    0xb8, 0x9d, 0x00, 0x00, 0x00,
    0x0f, 0x05,
  ]);
  return Buffer.concat([prologue, body, Buffer.from(`${name.slice(0, 15)}\0`, 'latin1')]);
}

// loop: mov eax, SYS_pause; syscall; jmp loop
const PAUSE_LOOP = Buffer.from([0xb8, 0x22, 0x00, 0x00, 0x00, 0x0f, 0x05, 0xeb, 0xf7]);

/** Address of the stub's `syscall` instruction (in its pause loop). */
export const STUB_SYSCALL_ADDRESS = STUB_BASE + BigInt(ELF_CODE_OFFSET + PROLOGUE_SIZE + 5);

/**
 * Start one of our programs in a new session, with no descriptors but those `fileActions` open,
 * and default signal dispositions. Returns its PID; the caller owns it (must kill and reap it).
 * The path names the memfd through this process's /proc entry, which the child's closefrom()
 * cannot close before exec reads it.
 */
export function spawnProgram(name: string, body: Buffer, fileActions: readonly FileAction[] = []): number {
  const memfd = memfdCreate(name, MFD_CLOEXEC);
  try {
    writeSync(memfd, buildElf(namedProgram(name, body), STUB_BASE).bytes);
    return posixSpawn(`/proc/${process.pid}/fd/${memfd}`, [name], {
      setsid: true,
      fileActions: [{ kind: 'closefrom', fd: 0 }, ...fileActions],
    });
  } finally {
    closeSync(memfd);
  }
}

/** Start a stub: a process that pauses forever. */
export function spawnStub(name = 'ferry-stub'): number {
  return spawnProgram(name, PAUSE_LOOP);
}
