// ferry untrack: release the dirty-page tracker a `dump --track-mem` left in a process, whether or
// not its record is still there.
import { withGuardian } from './guardian.js';
import { userProcessStat } from './proc/process.js';
import { findTracker } from './memory/dirty.js';
import { readTrackingRecord, removeTrackingRecord } from './memory/tracking.js';
import { NR } from './sys/nr.js';
import { RemoteSyscalls } from './tracee/remote.js';
import { Tracee } from './tracee/tracee.js';

/** What `ferry untrack` did. */
export interface Untracked {
  pid: number;
  /** The descriptor of ferry's tracker the process held and closed, or null if it held none. */
  fd: number | null;
  /** The image its tracking went on from, when its record said. */
  image: string | null;
}

/**
 * Release the dirty-page tracker a `dump --track-mem` left in process `pid` (found through its
 * record, or in the process itself when the record is gone): the process closes its descriptor,
 * which unregisters its memory, and the record goes. Later dumps of it store every page.
 */
export async function untrack(pid: number): Promise<Untracked> {
  const startTime = userProcessStat(pid).startTime;
  const record = readTrackingRecord(pid, startTime);
  const fd = findTracker(pid);
  if (fd !== undefined) {
    await withGuardian(undefined, (guardian) => {
      const tracee = Tracee.freeze(pid, { watch: guardian });
      try {
        const remote = RemoteSyscalls.open(tracee);
        try {
          remote.check('close', NR.close, fd);
        } finally {
          remote.close();
        }
      } finally {
        tracee.release();
      }
      return Promise.resolve();
    });
  }
  removeTrackingRecord(pid, startTime);
  return { pid, fd: fd ?? null, image: record?.image || null };
}
