// The sys layer on real processes: register sets, signal masks, rseq, LISTEN, pidfds, posix_spawn
// file actions, process_vm_readv/writev. Every process here is a stub spawned with posix_spawn.
import assert from 'node:assert/strict';
import { closeSync, readdirSync, readFileSync, readlinkSync } from 'node:fs';
import { test } from 'node:test';
import { spawnStub, STUB_BASE } from '../../src/stub/stub.js';
import { pidfdGetfd, pidfdOpen } from '../../src/sys/pidfd.js';
import { processVmReadv, processVmWritev } from '../../src/sys/process-vm.js';
import {
  PTRACE_EVENT,
  PTRACE_O,
  ptraceDetach,
  ptraceGetRegs,
  ptraceGetRseqConfiguration,
  ptraceGetSigmask,
  ptraceGetXstate,
  ptraceInterrupt,
  ptraceListen,
  ptraceSeize,
  ptraceSetRegs,
  ptraceSetSigmask,
  ptraceSetXstate,
} from '../../src/sys/ptrace.js';
import { kill, SIG } from '../../src/sys/signal.js';
import { posixSpawn } from '../../src/sys/spawn.js';
import { sleepMs } from '../../src/sys/time.js';
import { waitpid } from '../../src/sys/wait.js';

const XFEATURE_SSE = 1n << 1n;

function withStub(fn: (pid: number) => void): void {
  const pid = spawnStub('ferry-sys-test');
  try {
    for (let i = 0; i < 200 && !readFileSync(`/proc/${pid}/syscall`, 'latin1').startsWith('0 '); i++)
      sleepMs(5);
    fn(pid);
  } finally {
    kill(pid, SIG.SIGKILL);
    waitpid(pid, 0);
  }
}

/** Seize and interrupt, run fn on the stopped stub, detach. */
function withStopped(pid: number, fn: () => void): void {
  ptraceSeize(pid, PTRACE_O.TRACESYSGOOD);
  ptraceInterrupt(pid);
  const stop = waitpid(pid, 0);
  assert.ok(stop?.kind === 'stopped' && stop.event === PTRACE_EVENT.STOP, JSON.stringify(stop));
  try {
    fn();
  } finally {
    ptraceDetach(pid, 0);
  }
}

test('registers, xstate and signal mask: read, changed, read back, restored', () => {
  withStub((pid) =>
    withStopped(pid, () => {
      const regs = ptraceGetRegs(pid);
      assert.equal(regs.orig_rax, 0n, 'stopped in read()');
      ptraceSetRegs(pid, { ...regs, r12: 0x1234n });
      assert.equal(ptraceGetRegs(pid).r12, 0x1234n);
      ptraceSetRegs(pid, regs);

      const xstate = ptraceGetXstate(pid);
      assert.ok(xstate.length >= 576, `xsave area of ${xstate.length} bytes: legacy area and header`);
      const changed = Buffer.from(xstate);
      changed.fill(0x5a, 160, 176); // xmm0 in the legacy area
      // XSTATE_BV (header, offset 512) says which components hold data; without the SSE bit the
      // kernel loads SSE in its init state and ignores the bytes.
      changed.writeBigUInt64LE(changed.readBigUInt64LE(512) | XFEATURE_SSE, 512);
      ptraceSetXstate(pid, changed);
      assert.deepEqual(ptraceGetXstate(pid).subarray(160, 176), Buffer.alloc(16, 0x5a));
      ptraceSetXstate(pid, xstate);

      const mask = ptraceGetSigmask(pid);
      ptraceSetSigmask(pid, 1n << BigInt(SIG.SIGUSR1 - 1));
      assert.equal(ptraceGetSigmask(pid), 1n << BigInt(SIG.SIGUSR1 - 1));
      ptraceSetSigmask(pid, mask);

      assert.equal(ptraceGetRseqConfiguration(pid).abiPointer, 0n, 'the stub registers no rseq');
    }),
  );
});

test('PTRACE_LISTEN holds a process in group-stop', () => {
  withStub((pid) => {
    ptraceSeize(pid, 0);
    kill(pid, SIG.SIGSTOP);
    const stop = waitpid(pid, 0);
    assert.ok(stop?.kind === 'stopped' && stop.signal === SIG.SIGSTOP, JSON.stringify(stop));
    // The SIGSTOP's signal-delivery stop; resuming it with SIGSTOP enters group-stop.
    ptraceDetach(pid, SIG.SIGSTOP);
    for (let i = 0; i < 200 && !/^State:\s+T/m.test(readFileSync(`/proc/${pid}/status`, 'latin1')); i++)
      sleepMs(5);
    ptraceSeize(pid, 0);
    ptraceInterrupt(pid);
    const group = waitpid(pid, 0);
    assert.ok(group?.kind === 'stopped' && group.event === PTRACE_EVENT.STOP && group.signal === SIG.SIGSTOP);
    ptraceListen(pid);
    assert.match(readFileSync(`/proc/${pid}/status`, 'latin1'), /^State:\s+t/m);
    kill(pid, SIG.SIGCONT);
  });
});

test('process_vm_writev and readv move bytes across many ranges', () => {
  withStub((pid) =>
    withStopped(pid, () => {
      // The stub's stack is writable: write two ranges and read them back in one call.
      const stack = readFileSync(`/proc/${pid}/maps`, 'latin1')
        .split('\n')
        .find((l) => l.endsWith('[stack]'))!;
      const base = BigInt(`0x${stack.split('-')[0]}`);
      const ranges = [
        { addr: base, len: 3 },
        { addr: base + 100n, len: 4 },
      ];
      assert.equal(processVmWritev(pid, Buffer.from('abcdefg'), ranges), 7);
      const back = Buffer.alloc(7);
      assert.equal(processVmReadv(pid, back, ranges), 7);
      assert.equal(back.toString(), 'abcdefg');
      const code = Buffer.alloc(4);
      processVmReadv(pid, code, [{ addr: STUB_BASE, len: 4 }]);
      assert.equal(code.toString('latin1'), '\x7fELF');
    }),
  );
});

test('posix_spawn file actions, pidfd_open and pidfd_getfd', () => {
  const pid = posixSpawn('/bin/sleep', ['sleep', '30'], {
    fileActions: [
      { kind: 'closefrom', fd: 0 },
      { kind: 'open', fd: 0, path: '/dev/null', flags: 0 },
      { kind: 'open', fd: 5, path: '/etc/hostname', flags: 0 },
      { kind: 'dup2', fd: 5, newFd: 7 },
      { kind: 'close', fd: 5 },
    ],
  });
  try {
    // Until sleep sleeps: the dynamic loader holds a descriptor of its own a moment after exec.
    const asleep = (): boolean => /^(35|230) /.test(readFileSync(`/proc/${pid}/syscall`, 'latin1'));
    for (let i = 0; i < 200 && !asleep(); i++) sleepMs(5);
    assert.deepEqual(readdirSync(`/proc/${pid}/fd`).sort(), ['0', '7']);
    assert.equal(readlinkSync(`/proc/${pid}/fd/7`), '/etc/hostname');
    const pidfd = pidfdOpen(pid);
    const fd = pidfdGetfd(pidfd, 7);
    try {
      assert.equal(readlinkSync(`/proc/self/fd/${fd}`), '/etc/hostname');
    } finally {
      closeSync(fd);
      closeSync(pidfd);
    }
  } finally {
    kill(pid, SIG.SIGKILL);
    waitpid(pid, 0);
  }
});
