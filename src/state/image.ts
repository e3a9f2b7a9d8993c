// The process state an image holds: one record per state module, composed into the manifest schema
// (docs/image.schema.json is generated from it).
import { IMAGE_VERSION, manifestSchema, openManifest } from '../image/manifest.js';
import { array, integer, nullable, object, string, type Infer } from '../image/schema.js';
import { credsRecord } from './creds.js';
import { filesRecord } from './files.js';
import { fsRecord } from './fs.js';
import { locksRecord } from './locks.js';
import { vmasRecord } from '../memory/vmas.js';
import { mmRecord } from './mm.js';
import { rlimitsRecord } from './rlimits.js';
import { pendingRecord, signalsRecord } from './signals.js';
import { threadRecord } from './thread.js';
import { sysvRecord } from './sysv.js';
import { taskRecord } from './task.js';
import { ownersRecord } from './fown.js';
import { controllingRecord } from './fd-pty.js';
import { timersRecord } from './timers.js';
import { treeRecord } from './tree.js';

/** Threads an image may hold: the first is the thread-group leader. */
const MAX_THREADS = 1 << 15;

export const stateRecord = object({
  pid: integer(1, 2 ** 22),
  command: string({ max: 16, description: 'comm: the process name' }),
  cmdline: array(string({ max: 1 << 20 }), { max: 1 << 16 }),
  selection: nullable(string({ max: 4096, description: 'the --vmas spec of a partial dump, null for all' })),
  threads: array(threadRecord, { min: 1, max: MAX_THREADS }),
  mm: mmRecord,
  vmas: vmasRecord,
  /** SysV shared memory segments the VMAs attach. */
  shm: sysvRecord,
  files: filesRecord,
  /** File locks and leases its descriptors hold. */
  locks: locksRecord,
  fs: fsRecord,
  creds: credsRecord,
  rlimits: rlimitsRecord,
  /** Descriptors' SIGIO owners and signals (F_SETOWN_EX, F_SETSIG); empty before version 8. */
  owners: ownersRecord,
  /** Its controlling terminal, when it is a pty the dump holds the master of; null before version 8. */
  controlling: controllingRecord,
  /** OOM adjustment, login uid, subreaper, THP, membarrier; null in an image older than version 8. */
  task: taskRecord,
  signals: signalsRecord,
  pending: pendingRecord,
  timers: timersRecord,
});

export const manifestRecord = manifestSchema(stateRecord, treeRecord);
export type Manifest = Infer<typeof manifestRecord>;

/**
 * An image of an older format version, as this one reads it: version 1 had neither page layers
 * nor parents; versions 1 and 2 held one process, no pending signals and no timers (a process
 * that had some was refused); before version 6 a stopped process was refused; before version 7
 * file locks were not saved; before version 8 task attributes (OOM adjustment, login uid, ...),
 * threads' scheduling, timer slack, parent-death signal and own credentials, and descriptors'
 * SIGIO owners were not (null or none: the restore leaves them as they come). What an older image
 * lacks is filled in, what it has is kept.
 */
function upgradeManifest(old: Record<string, unknown>, version: number): Record<string, unknown> {
  const defaults = {
    pending: [],
    timers: { itimers: [], posix: [] },
    shm: [],
    locks: [],
    task: null,
    owners: [],
    controlling: null,
  };
  const threadDefaults = {
    sched: null,
    timerSlack: null,
    pdeathsig: 0,
    creds: null,
    seccomp: null,
    seccompStrict: false,
  };
  const fileDefaults: Record<string, Record<string, unknown>> = {
    socket: { options: [] },
    unix: { connect: null, shutdown: 0, options: [] },
    tty: { pty: null },
    fifo: { deleted: null },
  };
  const upgrade = (state: Record<string, unknown> | undefined): Record<string, unknown> => {
    const fs = state?.fs as Record<string, unknown> | undefined;
    const vmas = (state?.vmas as Record<string, unknown>[] | undefined)?.map((v) => ({ guards: [], ...v }));
    const threads = (state?.threads as Record<string, unknown>[] | undefined)?.map((t) => ({
      ...threadDefaults,
      ...t,
    }));
    const files = (state?.files as Record<string, unknown>[] | undefined)?.map((f) => ({
      ...fileDefaults[f.kind as string],
      ...f,
      ...(f.kind === 'epoll'
        ? { watches: (f.watches as Record<string, unknown>[]).map((w) => ({ via: null, taken: null, ...w })) }
        : {}),
    }));
    return {
      ...defaults,
      ...state,
      ...(threads ? { threads } : {}),
      ...(files ? { files } : {}),
      ...(fs ? { fs: { cwdDeleted: null, ...fs } } : {}),
      ...(vmas ? { vmas } : {}),
    };
  };
  const members = version <= 2 ? [] : ((old.tree as Record<string, unknown>[] | undefined) ?? []);
  const tree = members.map((m) => ({ stopped: null, ...m }));
  const children = ((old.children as Record<string, unknown>[] | undefined) ?? []).map(upgrade);
  return {
    layers: [],
    parent: null,
    networkLock: null,
    ...old,
    children,
    state: upgrade(old.state as Record<string, unknown>),
    tree,
  };
}

/** Open an image's manifest.json text (openManifest() with this version's schema and upgrades). */
export function openImageManifest(text: string, location: string): Manifest {
  return openManifest(text, manifestRecord, location, upgradeManifest);
}
export type ProcessState = Manifest['state'];

/** The manifest schema as JSON Schema (docs/image.schema.json). */
export function imageJsonSchema(): Record<string, unknown> {
  return {
    $schema: 'http://json-schema.org/draft-07/schema#',
    title: `ferry image manifest (manifest.json), format version ${IMAGE_VERSION}`,
    description:
      'Addresses, registers, masks and offsets are hex strings (0x...); byte strings are base64. See docs/IMAGE.md.',
    ...manifestRecord.json(),
  };
}
