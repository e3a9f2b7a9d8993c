// The batch executor: 167 bytes of x86_64 code ferry places in a traced process to run a table of
// system calls with one ptrace stop instead of two per call, and the way back to the thread's own
// state should ferry go away meanwhile (the rescue).
//
//   table:   u64 count, tgid, tid, signal; then per call: u64 nr, a1, a2, a3, a4, a5, a6, result
//   cleanup: u64 taken, count; then per call: u64 nr, a1, a2, a3, a4, a5, a6, unused
//   r15:     where rsp must point for rt_sigreturn: the thread's rescue frame + 8 (sigframe.ts)
//
//   0x00  mov r12, rdi              ; table
//   0x03  mov r13, [r12]            ; calls left
//   0x07  lea r14, [r12+32]         ; current call
//   0x0c  test r13, r13
//   0x0f  je 0x43
//   0x11  mov rax, [r14]            ; nr
//   0x14  mov rdi, [r14+8] ... 0x28 mov r9, [r14+48]
//   0x2c  syscall
//   0x2e  mov [r14+56], rax         ; result
//   0x32  cmp rax, -4095
//   0x38  jae 0x43                  ; stop at the first failure
//   0x3a  add r14, 64
//   0x3e  dec r13
//   0x41  jmp 0x0c
//   0x43  mov eax, 234              ; tgkill(tgid, tid, signal): a signal-delivery stop hands
//   0x48  mov rdi, [r12+8] ...      ; control back to ferry, which never lets the thread past it
//   0x57  syscall
//   0x59  lea rbx, [rip+0xa0]       ; the rescue, reached only without ferry: cleanup at 0x100
//   0x60  lock bts qword [rbx], 0   ; once per process, whichever thread comes first
//   0x66  jb 0x9b
//   0x68  mov r13, [rbx+8]; lea r14, [rbx+16]
//   0x70  ... each cleanup call, failures ignored ... 0x99 jmp 0x70
//   0x9b  mov rsp, r15
//   0x9e  mov eax, 15
//   0xa3  syscall                   ; rt_sigreturn: the thread's own registers, mask, xstate
//   0xa5  ud2
// Assembled with gcc and checked with objdump.

export const EXECUTOR_CODE = Buffer.from(
  '4989fc4d8b2c244d8d7424204d85ed7432498b06498b7e08498b7610498b56184d8b56204d8b46284d8b4e30' +
    '0f0549894638483d01f0ffff73094983c64049ffcdebc9b8ea000000498b7c2408498b742410498b542418' +
    '0f05488d1da0000000f0480fba2b0072334c8b6b084c8d73104d85ed7426498b06498b7e08498b7610498b56' +
    '184d8b56204d8b46284d8b4e300f054983c64049ffcdebd54c89fcb80f0000000f050f0b',
  'hex',
);

/** Offset of the executor's per-call `syscall` instruction: also usable alone, with PTRACE_SYSCALL. */
export const EXECUTOR_SYSCALL = 0x2c;
/** Where rip points at the stop that ends a batch (after the tgkill), and where the rescue starts. */
export const EXECUTOR_END = 0x59;
/** The rescue: run the cleanup table once, then rt_sigreturn on the frame at r15. */
export const EXECUTOR_RESCUE = 0x59;
/** The cleanup table, right after the code. */
export const CLEANUP_OFFSET = 0x100;
export const CLEANUP_MAX = 7;
/** Where the code and the cleanup table end: the call table starts here. */
export const EXECUTOR_BYTES = CLEANUP_OFFSET + 16 + CLEANUP_MAX * 64 + 48;

export const CALL_SIZE = 64;
export const TABLE_HEADER = 32;

/** Encode calls (nr and up to six arguments each) in the executor's 64-byte layout after `header`. */
export function encodeCalls(
  header: readonly bigint[],
  calls: readonly { nr: number; args: readonly (number | bigint)[] }[],
  unset: bigint,
): Buffer {
  const table = Buffer.alloc(header.length * 8 + calls.length * CALL_SIZE);
  header.forEach((word, i) => table.writeBigUInt64LE(BigInt.asUintN(64, word), i * 8));
  calls.forEach((c, i) => {
    const at = header.length * 8 + i * CALL_SIZE;
    table.writeBigUInt64LE(BigInt(c.nr), at);
    c.args.forEach((a, j) => table.writeBigUInt64LE(BigInt.asUintN(64, BigInt(a)), at + 8 + j * 8));
    table.writeBigUInt64LE(unset, at + 56);
  });
  return table;
}
