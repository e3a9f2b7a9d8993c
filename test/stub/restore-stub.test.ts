import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { test } from 'node:test';
import { parseStat } from '../../src/proc/stat.js';
import { startRestoreStub, type PidMethod } from '../../src/stub/restore-stub.js';

/** A PID no process holds now, high enough that the kernel hands it out late. */
function freePid(): number {
  const max = Number(readFileSync('/proc/sys/kernel/pid_max', 'latin1'));
  for (;;) {
    const pid = Math.floor(max / 2 + Math.random() * (max / 2 - 10));
    if (!existsSync(`/proc/${pid}`)) return pid;
  }
}

for (const method of ['clone3', 'ns_last_pid'] satisfies PidMethod[]) {
  test(`a restore stub gets the PID it asks for through ${method}, as this process's child`, () => {
    const pid = freePid();
    const stub = startRestoreStub(pid, 'require', method);
    try {
      assert.equal(stub.pid, pid);
      const stat = parseStat(readFileSync(`/proc/${pid}/stat`, 'latin1'));
      assert.equal(stat.comm, 'ferry-restore');
      assert.equal(stat.ppid, process.pid);
      assert.equal(stat.session, pid); // a session of its own
      assert.equal(stat.state, 't'); // held
    } finally {
      stub.tracee.kill();
    }
    assert.equal(existsSync(`/proc/${pid}`), false);
  });
}
