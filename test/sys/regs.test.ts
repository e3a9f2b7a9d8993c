import assert from 'node:assert/strict';
import { test } from 'node:test';
import {
  decodeRegs,
  encodeRegs,
  interruptedRegs,
  REG_NAMES,
  resumeRegs,
  signed,
  USER_REGS_SIZE,
} from '../../src/sys/regs.js';

test('user_regs_struct is 27 slots in kernel order; encoding is exact and round-trips', () => {
  assert.equal(USER_REGS_SIZE, 216);
  const regs = Object.fromEntries(REG_NAMES.map((name, i) => [name, BigInt(i + 1)])) as ReturnType<
    typeof decodeRegs
  >;
  regs.orig_rax = (1n << 64n) - 1n;
  const bytes = encodeRegs(regs);
  assert.equal(bytes.readBigUInt64LE(0), 1n); // r15 first
  assert.equal(bytes.readBigUInt64LE(10 * 8), 11n); // rax is slot 10
  assert.equal(bytes.readBigUInt64LE(16 * 8), 17n); // rip is slot 16
  assert.equal(bytes.readBigUInt64LE(21 * 8), 22n); // fs_base is slot 21
  assert.equal(bytes.subarray(15 * 8, 16 * 8).toString('hex'), 'ffffffffffffffff');
  assert.deepEqual(decodeRegs(bytes), regs);
  assert.equal(signed(regs.orig_rax), -1n);
});

test('a call interrupted with a handled signal to come fails with EINTR, unless it restarts regardless', () => {
  const regs = Object.fromEntries(REG_NAMES.map((name) => [name, 0n])) as ReturnType<typeof decodeRegs>;
  const call = (ret: bigint): typeof regs => ({
    ...regs,
    orig_rax: 34n,
    rax: BigInt.asUintN(64, ret),
    rip: 0x1002n,
  });
  const EINTR = BigInt.asUintN(64, -4n);
  assert.equal(interruptedRegs(call(-514n), false).rax, EINTR, 'ERESTARTNOHAND (pause)');
  assert.equal(interruptedRegs(call(-516n), false).rax, EINTR, 'ERESTART_RESTARTBLOCK (nanosleep)');
  assert.equal(interruptedRegs(call(-512n), false).rax, EINTR, 'ERESTARTSYS without SA_RESTART');
  assert.equal(
    interruptedRegs(call(-512n), true).rax,
    BigInt.asUintN(64, -512n),
    'ERESTARTSYS with SA_RESTART',
  );
  assert.equal(interruptedRegs(call(-513n), false).rax, BigInt.asUintN(64, -513n), 'ERESTARTNOINTR');
  const notInCall = { ...call(-514n), orig_rax: (1n << 64n) - 1n };
  assert.deepEqual(interruptedRegs(notInCall, false), notInCall, 'not in a syscall: unchanged');
  // The rest of the way out, as before: EINTR is returned where the call was, not run again.
  const out = resumeRegs(interruptedRegs(call(-514n), false));
  assert.equal(out.rip, 0x1002n);
  assert.equal(out.rax, EINTR);
});
