import assert from 'node:assert/strict';
import { test } from 'node:test';
import { decodeRegs, encodeRegs, REG_NAMES, signed, USER_REGS_SIZE } from '../../src/sys/regs.js';

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
