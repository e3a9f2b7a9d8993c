// The rescue's signal frame, byte by byte where the kernel reads it (arch/x86/kernel/signal_64.c).
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { NR } from '../../src/sys/nr.js';
import { NO_RESTART, REG_NAMES, type Regs } from '../../src/sys/regs.js';
import { encodeSigframe, sigframeSize } from '../../src/tracee/sigframe.js';

const regs = (set: Partial<Regs>): Regs => ({
  ...(Object.fromEntries(REG_NAMES.map((n, i) => [n, BigInt(i + 1)])) as Regs),
  cs: 0x33n,
  ss: 0x2bn,
  orig_rax: NO_RESTART,
  ...set,
});

/** An xsave area as ptrace gives it: XCR0 at 464, XSTATE_BV at 512. */
function xsave(size: number, xcr0: bigint, inUse: bigint): Buffer {
  const b = Buffer.alloc(size, 0xab);
  b.writeBigUInt64LE(xcr0, 464);
  b.writeBigUInt64LE(inUse, 512);
  return b;
}

const AT = 0x7ffc_0000_1000n;
const sc = (name: number): number => 48 + name * 8; // sigcontext slot n

test('a frame holds the registers, mask and xstate where rt_sigreturn reads them', () => {
  const x = xsave(2696, 0x2e7n, 0x7n);
  const f = encodeSigframe(AT, regs({ rip: 0x401000n, rsp: 0x7ffc_0000_9000n, eflags: 0x246n }), 0x10000n, x);
  assert.equal(f.rsp, AT + 8n);
  assert.equal(f.bytes.length, sigframeSize(x));
  assert.equal(f.bytes.length, 448 + 2696 + 4);
  assert.equal(f.bytes.readBigUInt64LE(8), 7n, 'uc_flags: FP_XSTATE | SIGCONTEXT_SS | STRICT_RESTORE_SS');
  assert.equal(f.bytes.readUInt32LE(32), 0xffffffff, 'invalid ss_flags keep the alternate stack');
  assert.equal(f.bytes.readBigUInt64LE(sc(16)), 0x401000n, 'rip');
  assert.equal(f.bytes.readBigUInt64LE(sc(15)), 0x7ffc_0000_9000n, 'rsp');
  assert.equal(f.bytes.readBigUInt64LE(sc(17)), 0x246n, 'eflags');
  assert.equal(f.bytes.readBigUInt64LE(sc(0)), regs({}).r8, 'r8 first');
  assert.equal(f.bytes.readUInt16LE(48 + 144), 0x33, 'cs');
  assert.equal(f.bytes.readUInt16LE(48 + 150), 0x2b, 'ss');
  assert.equal(f.bytes.readBigUInt64LE(48 + 184), AT + 448n, 'fpstate pointer');
  assert.equal(f.bytes.readBigUInt64LE(304), 0x10000n, 'uc_sigmask');
  assert.equal(f.bytes.readUInt32LE(448 + 464), 0x46505853, 'FP_XSTATE_MAGIC1');
  assert.equal(f.bytes.readUInt32LE(448 + 468), 2696 + 4, 'extended_size');
  assert.equal(f.bytes.readBigUInt64LE(448 + 472), 0x2e7n, 'xfeatures');
  assert.equal(f.bytes.readUInt32LE(448 + 480), 2696, 'xstate_size');
  assert.equal(f.bytes.readUInt32LE(448 + 2696), 0x46505845, 'FP_XSTATE_MAGIC2');
  assert.equal(f.bytes.readBigUInt64LE(448 + 512), 0x7n, 'the xsave area itself');
});

test('an interrupted syscall is set to run again; restart_syscall cannot be', () => {
  const x = xsave(1024, 0x7n, 0x3n);
  const rip = (f: { bytes: Buffer }): bigint => f.bytes.readBigUInt64LE(sc(16));
  const rax = (f: { bytes: Buffer }): bigint => f.bytes.readBigUInt64LE(sc(13));
  const sleeping = regs({ rip: 0x500n, rax: BigInt.asUintN(64, -516n), orig_rax: BigInt(NR.nanosleep) });
  const again = encodeSigframe(AT, sleeping, 0n, x);
  assert.equal(rip(again), 0x4fen);
  assert.equal(rax(again), BigInt(NR.nanosleep));
  const read = regs({ rip: 0x600n, rax: BigInt.asUintN(64, -512n), orig_rax: 0n });
  assert.equal(rip(encodeSigframe(AT, read, 0n, x)), 0x5fen);
  const restart = regs({ rip: 0x700n, rax: BigInt.asUintN(64, -516n), orig_rax: BigInt(NR.restart_syscall) });
  assert.equal(rax(encodeSigframe(AT, restart, 0n, x)), BigInt.asUintN(64, -4n), '-EINTR');
  const done = regs({ rip: 0x800n, rax: 5n, orig_rax: 0n });
  assert.equal(rip(encodeSigframe(AT, done, 0n, x)), 0x800n, 'a finished call is left alone');
});

test('AMX tile data the thread does not use is left out of the frame; aligned frames only', () => {
  const amx = 0x600e7n; // ... AVX-512, TILECFG (17), TILEDATA (18)
  const unused = encodeSigframe(AT, regs({}), 0n, xsave(11008, amx, 0xa6n));
  assert.equal(unused.bytes.readUInt32LE(448 + 480), 11008 - 8192);
  assert.equal(unused.bytes.readBigUInt64LE(448 + 472), amx & ~(1n << 18n));
  const used = encodeSigframe(AT, regs({}), 0n, xsave(11008, amx, 0x400a6n));
  assert.equal(used.bytes.readUInt32LE(448 + 480), 11008);
  assert.throws(() => encodeSigframe(AT + 8n, regs({}), 0n, xsave(1024, 7n, 3n)), RangeError);
});
