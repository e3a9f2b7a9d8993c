// open_by_handle_at(2): a file by its handle (what fdinfo shows an inotify watch by), given any
// descriptor (not O_PATH) on the filesystem it lives on. Needs CAP_DAC_READ_SEARCH.
import { closeSync, readlinkSync } from 'node:fs';
import { syscall } from './call.js';
import { O } from './fcntl.js';
import { NR } from './nr.js';

const O_PATH = 0o10000000;

/**
 * The path (as this process sees it) of the file with handle `handle` of type `type`, on the
 * filesystem `mountFd` is on; ' (deleted)' ends it for a file that has no name any more.
 */
export function pathOfHandle(mountFd: number, type: number, handle: Buffer): string {
  const fileHandle = Buffer.alloc(8 + handle.length);
  fileHandle.writeUInt32LE(handle.length, 0);
  fileHandle.writeInt32LE(type, 4);
  handle.copy(fileHandle, 8);
  const describe = (): string[] => [String(mountFd), handle.toString('hex')];
  const fd = syscall(
    NR.open_by_handle_at,
    'open_by_handle_at',
    describe,
    mountFd,
    fileHandle,
    O_PATH | O.CLOEXEC,
  );
  try {
    return readlinkSync(`/proc/self/fd/${fd}`);
  } finally {
    closeSync(fd);
  }
}
