// The state of a fanotify descriptor, from the `fanotify` records of its fdinfo:
//   fanotify flags:10 event-flags:0
//   fanotify ino:4f969 sdev:800013 mflags:0 mask:3b ignored_mask:0 fhandle-bytes:8 fhandle-type:1 f_handle:69f9...
//   fanotify mnt_id:22 mflags:0 mask:3b ignored_mask:0
//   fanotify sdev:800013 mflags:0 mask:3b ignored_mask:0
// (an instance's flags; then its marks on an inode, a mount, a filesystem). Numbers are hex; `sdev`
// is the kernel's device number (major << 20 | minor).
import { parseError } from './parse-error.js';

interface MarkMasks {
  mflags: number;
  mask: number;
  ignoredMask: number;
}

export type FanotifyMark =
  | ({
      kind: 'inode';
      ino: bigint;
      major: number;
      minor: number;
      handleType: number;
      handle: Buffer;
    } & MarkMasks)
  | ({ kind: 'mount'; mntId: number } & MarkMasks)
  | ({ kind: 'filesystem'; major: number; minor: number } & MarkMasks);

export interface FanotifyState {
  flags: number;
  eventFlags: number;
  marks: FanotifyMark[];
}

const FIELD = /([a-z_-]+):([0-9a-f]*)/g;

/** Parse the values of an fdinfo's `fanotify` records, in order. */
export function parseFanotify(records: readonly string[], source = 'fdinfo'): FanotifyState {
  const state: FanotifyState = { flags: 0, eventFlags: 0, marks: [] };
  records.forEach((text, i) => {
    const f = new Map([...text.matchAll(FIELD)].map((m) => [m[1]!, m[2]!]));
    const hex = (key: string): number => {
      const v = f.get(key);
      if (v === undefined || v === '') throw parseError(source, i + 1, `a "${key}:" field`, text);
      return parseInt(v, 16);
    };
    if (f.has('event-flags')) {
      state.flags = hex('flags');
      state.eventFlags = hex('event-flags');
      return;
    }
    const masks = { mflags: hex('mflags'), mask: hex('mask'), ignoredMask: hex('ignored_mask') };
    if (f.has('ino')) {
      const handle = Buffer.from(f.get('f_handle') ?? '', 'hex');
      if (handle.length !== hex('fhandle-bytes'))
        throw parseError(source, i + 1, `a handle of ${hex('fhandle-bytes')} bytes`, text);
      const dev = hex('sdev');
      state.marks.push({
        kind: 'inode',
        ino: BigInt(`0x${f.get('ino')!}`),
        major: dev >>> 20,
        minor: dev & 0xfffff,
        handleType: hex('fhandle-type'),
        handle,
        ...masks,
      });
    } else if (f.has('mnt_id')) state.marks.push({ kind: 'mount', mntId: hex('mnt_id'), ...masks });
    else {
      const dev = hex('sdev');
      state.marks.push({ kind: 'filesystem', major: dev >>> 20, minor: dev & 0xfffff, ...masks });
    }
  });
  return state;
}
