// Programs of our own making, with no libc and nothing mapped but their code, a stack and the
// kernel's vDSO. The stub waits until ferry seizes it and turns it into something else
// (a restored process) or probes the kernel with it (`ferry check`); the demo workload counts.
import { closeSync, writeSync } from 'node:fs';
import { O } from '../sys/fcntl.js';
import { memfdCreate, MFD_CLOEXEC } from '../sys/memfd.js';
import { pipe2 } from '../sys/pipe.js';
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

/**
 * The stub's body: it dies with the ferry that spawned it, whatever happens. It sets a parent-death
 * signal and checks that its parent is still `parent` (one that died before would not send it),
 * then waits reading descriptor 0, the lifeline below, until ferry is gone:
 *    0: prctl(PR_SET_PDEATHSIG, SIGKILL)   0x11: getppid()   0x18: cmp eax, parent; jne exit
 *   0x1f: read(0, rsp, 1) (syscall at 0x2b); test rax, rax; jg 0x1f
 *   0x32: exit_group(0)
 * A process cloned from a stub (a restore under the original PID) waits in the same loop.
 */
function stubBody(parent: number): Buffer {
  const ppid = Buffer.alloc(4);
  ppid.writeInt32LE(parent);
  return Buffer.concat([
    Buffer.from('bf01000000be09000000b89d0000000f05b86e0000000f053d', 'hex'),
    ppid,
    Buffer.from('751331c031ff4889e6ba010000000f054885c07fedbf00000000b8e70000000f05', 'hex'),
  ]);
}

/** Address of the stub's `syscall` instruction (in its read loop). */
export const STUB_SYSCALL_ADDRESS = STUB_BASE + BigInt(ELF_CODE_OFFSET + PROLOGUE_SIZE + 0x2b);

let lifeline: number | undefined;

/**
 * The read end of a pipe whose write end this process keeps until it ends: a stub reading it sees
 * its end then. Both ends close on exec, so that no other program this process starts (the
 * guardian) holds the write end.
 */
function lifelineFd(): number {
  lifeline ??= pipe2(O.CLOEXEC)[0];
  return lifeline;
}

/**
 * Start one of our programs in a new session, with no descriptors but those `fileActions` give it
 * (descriptors of ours put in place with dup2, from 0 up; files opened), and default signal
 * dispositions. Returns its PID; the caller owns it (must kill and reap it). The path names the
 * memfd through this process's /proc entry, which the child's closefrom() cannot close before exec
 * reads it.
 */
export function spawnProgram(name: string, body: Buffer, fileActions: readonly FileAction[] = []): number {
  const dups = fileActions.filter((a) => a.kind === 'dup2');
  const others = fileActions.filter((a) => a.kind !== 'dup2');
  const memfd = memfdCreate(name, MFD_CLOEXEC);
  try {
    writeSync(memfd, buildElf(namedProgram(name, body), STUB_BASE).bytes);
    return posixSpawn(`/proc/${process.pid}/fd/${memfd}`, [name], {
      setsid: true,
      fileActions: [...dups, { kind: 'closefrom', fd: dups.length }, ...others],
    });
  } finally {
    closeSync(memfd);
  }
}

/** Start a stub: a process that waits until ferry seizes it, and dies with ferry. */
export function spawnStub(name = 'ferry-stub'): number {
  return spawnProgram(name, stubBody(process.pid), [{ kind: 'dup2', fd: lifelineFd(), newFd: 0 }]);
}
