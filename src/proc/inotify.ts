// The watches of an inotify descriptor, from the `inotify` records of its fdinfo:
//   inotify wd:3 ino:3f7e8 sdev:fe00000 mask:302 ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:e8f7...
// Numbers are hex; `sdev` is the kernel's own device number (major << 20 | minor); the file
// handle is what open_by_handle_at takes.
import { parseError } from './parse-error.js';

export interface InotifyWatch {
  wd: number;
  ino: bigint;
  major: number;
  minor: number;
  mask: number;
  ignoredMask: number;
  handleType: number;
  handle: Buffer;
}

const WATCH =
  /^wd:([0-9a-f]+) ino:([0-9a-f]+) sdev:([0-9a-f]+) mask:([0-9a-f]+) ignored_mask:([0-9a-f]+) fhandle-bytes:([0-9a-f]+) fhandle-type:([0-9a-f]+) f_handle:([0-9a-f]*)$/;

/** Parse the value of each `inotify` record (what follows "inotify "), in wd order. */
export function parseInotifyWatches(records: readonly string[], source = 'fdinfo'): InotifyWatch[] {
  return records
    .map((text, i) => {
      const m = WATCH.exec(text);
      if (!m)
        throw parseError(
          source,
          i + 1,
          '"wd:<hex> ino:<hex> sdev:<hex> mask:<hex> ... f_handle:<hex>"',
          text,
        );
      const hex = (k: number): number => parseInt(m[k]!, 16);
      const handle = Buffer.from(m[8]!, 'hex');
      if (handle.length !== hex(6)) throw parseError(source, i + 1, `a handle of ${hex(6)} bytes`, m[8]!);
      return {
        wd: hex(1),
        ino: BigInt(`0x${m[2]}`),
        major: hex(3) >>> 20,
        minor: hex(3) & 0xfffff,
        mask: hex(4),
        ignoredMask: hex(5),
        handleType: hex(7),
        handle,
      };
    })
    .sort((a, b) => a.wd - b.wd);
}
