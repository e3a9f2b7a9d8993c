// Whether a PID names a live user process: not a kernel thread, not a zombie.
import { FerryError } from '../errors.js';
import { readProcText } from './files.js';
import { parseStat, PF_KTHREAD, type ProcStat } from './stat.js';

/** The process's stat, or a FerryError saying why it has no user address space to work on. */
export function userProcessStat(pid: number): ProcStat {
  if (!Number.isInteger(pid) || pid <= 0) throw new FerryError('FERRY_USAGE', `not a PID: ${pid}`);
  const stat = parseStat(readProcText(pid, 'stat'), `/proc/${pid}/stat`);
  if (stat.flags & PF_KTHREAD) {
    throw new FerryError(
      'FERRY_KERNEL_THREAD',
      `PID ${pid} (${stat.comm}) is a kernel thread: it has no user memory`,
    );
  }
  if (stat.state === 'Z' || stat.state === 'X') {
    const why =
      stat.numThreads > 1
        ? `its main thread has exited while ${stat.numThreads - 1} other thread(s) run on, which ferry cannot restore`
        : 'it has exited and holds no memory';
    throw new FerryError('FERRY_ZOMBIE', `process ${pid} (${stat.comm}) is a zombie: ${why}`);
  }
  return stat;
}
