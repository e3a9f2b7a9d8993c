// A minimal static x86_64 ELF executable: one loadable segment holding the given code, a
// non-executable stack, no sections. Enough for the kernel's execve and nothing more.

const EHDR_SIZE = 64;
const PHDR_SIZE = 56;
const PT_LOAD = 1;
const PT_GNU_STACK = 0x6474e551;
const PF_X = 1;
const PF_W = 2;
const PF_R = 4;
const ET_EXEC = 2;
const EM_X86_64 = 62;

/** Where the code starts in the file, after the ELF header and the two program headers. */
export const ELF_CODE_OFFSET = EHDR_SIZE + 2 * PHDR_SIZE;

export interface ElfImage {
  /** The executable's bytes. */
  bytes: Buffer;
  /** Virtual address of the first byte of `code`. */
  codeAddress: bigint;
}

/** Build an executable loaded at `base` (page-aligned) whose entry point is the start of `code`. */
export function buildElf(code: Buffer, base: bigint): ElfImage {
  const headers = ELF_CODE_OFFSET;
  const bytes = Buffer.alloc(headers + code.length);
  const entry = base + BigInt(headers);
  // e_ident: magic, 64-bit, little-endian, version 1, System V ABI.
  bytes.set([0x7f, 0x45, 0x4c, 0x46, 2, 1, 1, 0], 0);
  bytes.writeUInt16LE(ET_EXEC, 16);
  bytes.writeUInt16LE(EM_X86_64, 18);
  bytes.writeUInt32LE(1, 20);
  bytes.writeBigUInt64LE(entry, 24);
  bytes.writeBigUInt64LE(BigInt(EHDR_SIZE), 32); // e_phoff
  bytes.writeBigUInt64LE(0n, 40); // e_shoff
  bytes.writeUInt16LE(EHDR_SIZE, 52);
  bytes.writeUInt16LE(PHDR_SIZE, 54);
  bytes.writeUInt16LE(2, 56); // e_phnum
  writePhdr(bytes, EHDR_SIZE, PT_LOAD, PF_R | PF_X, base, BigInt(bytes.length));
  writePhdr(bytes, EHDR_SIZE + PHDR_SIZE, PT_GNU_STACK, PF_R | PF_W, 0n, 0n);
  code.copy(bytes, headers);
  return { bytes, codeAddress: entry };
}

function writePhdr(buf: Buffer, at: number, type: number, flags: number, vaddr: bigint, size: bigint): void {
  buf.writeUInt32LE(type, at);
  buf.writeUInt32LE(flags, at + 4);
  buf.writeBigUInt64LE(0n, at + 8); // p_offset
  buf.writeBigUInt64LE(vaddr, at + 16);
  buf.writeBigUInt64LE(vaddr, at + 24);
  buf.writeBigUInt64LE(size, at + 32); // p_filesz
  buf.writeBigUInt64LE(size, at + 40); // p_memsz
  buf.writeBigUInt64LE(type === PT_LOAD ? 0x1000n : 0x10n, at + 48);
}
