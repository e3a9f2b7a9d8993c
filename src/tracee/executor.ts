// The batch executor: 68 bytes of x86_64 code ferry places in a traced process to run a table of
// system calls with one ptrace stop instead of two per call.
//
//   table:  u64 count, then per call: u64 nr, a1, a2, a3, a4, a5, a6, result
//
//   0x00  mov r12, rdi              ; table
//   0x03  mov r13, [r12]            ; calls left
//   0x07  lea r14, [r12+8]          ; current call
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
//   0x43  int3                      ; hand control back to ferry (a SIGTRAP stop)
// Assembled with gcc and checked with objdump.

export const EXECUTOR_CODE = Buffer.from(
  '4989fc4d8b2c244d8d7424084d85ed7432498b06498b7e08498b7610498b56184d8b56204d8b46284d8b4e30' +
    '0f0549894638483d01f0ffff73094983c64049ffcdebc9cc',
  'hex',
);

/** Offset of the executor's `syscall` instruction: also usable alone, with PTRACE_SYSCALL. */
export const EXECUTOR_SYSCALL = 0x2c;
/** Where rip points after the final int3. */
export const EXECUTOR_END = 0x44;

export const CALL_SIZE = 64;
export const TABLE_HEADER = 8;
