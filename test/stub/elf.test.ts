import assert from 'node:assert/strict';
import { readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { buildElf } from '../../src/stub/elf.js';
import { spawnStub, STUB_BASE } from '../../src/stub/stub.js';
import { kill, SIG } from '../../src/sys/signal.js';
import { sleepMs } from '../../src/sys/time.js';
import { waitpid } from '../../src/sys/wait.js';

test('ELF header and program headers, byte for byte', () => {
  const code = Buffer.from([0xcc]);
  const { bytes, codeAddress } = buildElf(code, 0x400000n);
  assert.equal(bytes.length, 64 + 2 * 56 + 1);
  assert.equal(bytes.subarray(0, 16).toString('hex'), '7f454c46020101000000000000000000');
  assert.equal(bytes.readUInt16LE(16), 2); // ET_EXEC
  assert.equal(bytes.readUInt16LE(18), 62); // x86_64
  assert.equal(codeAddress, 0x400000n + 176n);
  assert.equal(bytes.readBigUInt64LE(24), codeAddress); // entry
  assert.equal(bytes.readUInt16LE(56), 2); // two program headers
  // PT_LOAD R+X from offset 0 at the base, whole file
  assert.equal(
    bytes.subarray(64, 64 + 56).toString('hex'),
    '01000000050000000000000000000000' +
      '0000400000000000'.repeat(2) +
      'b100000000000000'.repeat(2) +
      '0010000000000000',
  );
  assert.equal(bytes.readUInt32LE(120), 0x6474e551); // PT_GNU_STACK
  assert.equal(bytes.readUInt32LE(124), 6); // R+W, not executable
  assert.equal(bytes[176], 0xcc);
});

test('the stub runs: its code at STUB_BASE, its lifeline as only descriptor, waiting on it', () => {
  const pid = spawnStub('ferry-test-stub');
  try {
    let maps = '';
    for (let i = 0; i < 100 && !maps.includes('[stack]'); i++) {
      sleepMs(5);
      maps = readFileSync(`/proc/${pid}/maps`, 'latin1');
    }
    assert.match(
      maps,
      new RegExp(`^0*${STUB_BASE.toString(16)}-\\S+ r-xp .*/memfd:ferry-test-stub \\(deleted\\)$`, 'm'),
    );
    assert.match(readlinkSync(`/proc/${pid}/exe`), /^\/memfd:ferry-test-stub/);
    assert.equal(readFileSync(`/proc/${pid}/comm`, 'latin1').trim(), 'ferry-test-stub');
    assert.deepEqual(readFileSync(`/proc/${pid}/cmdline`, 'latin1'), 'ferry-test-stub\0');
    assert.deepEqual(readdirSync(`/proc/${pid}/fd`), ['0']);
    assert.match(readlinkSync(`/proc/${pid}/fd/0`), /^pipe:/);
    let syscall = '';
    for (let i = 0; i < 100 && !syscall.startsWith('0 '); i++) {
      sleepMs(5);
      syscall = readFileSync(`/proc/${pid}/syscall`, 'latin1');
    }
    assert.match(syscall, /^0 0x0 /, 'blocked reading descriptor 0');
  } finally {
    kill(pid, SIG.SIGKILL);
    waitpid(pid, 0);
  }
});
