// A managed job's identity and past, which travel with it from agent to agent (the Ferry-Job header
// of a migration stream, docs/PROTOCOL.md): the balancer weighs its age and where it has been.
import { FerryError } from '../errors.js';

export interface JobInfo {
  /** Its own id, the same on every host. */
  id: string;
  name: string;
  /** When it was started (ms since the epoch), on the first host. */
  startedAt: number;
  /** The agents it ran on before this one, oldest first. */
  hops: string[];
  /** Started with --no-migrate: never moved. */
  pinned: boolean;
  /** CPU seconds it had on the hosts it left. */
  cpuSecondsBefore: number;
  /** When it arrived on this host by a migration (ms since the epoch). */
  arrivedAt?: number;
  /** Bytes per second it wrote during its last pre-copy move, as that move measured. */
  dirtyBytesPerSecond?: number;
  /** `ferry run --checkpoint-every`: checkpointed every `everyMs` into `sharedDir/<id>`, wherever it runs. */
  checkpoint?: JobCheckpoints;
}

export interface JobCheckpoints {
  everyMs: number;
  sharedDir: string;
}

export const JOB_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;
export const JOB_HEADER = 'ferry-job';
const MAX_HOPS = 64;
/** Checkpoints no closer together than this. */
export const MIN_CHECKPOINT_MS = 1_000;

export function encodeJobHeader(job: JobInfo): string {
  return Buffer.from(JSON.stringify(job)).toString('base64url');
}

/** The job a migration stream says it carries; anything malformed is refused (hostile input). */
export function decodeJobHeader(value: string): JobInfo {
  const bad = (why: string): FerryError => new FerryError('FERRY_USAGE', `the ${JOB_HEADER} header ${why}`);
  let v: Partial<Record<keyof JobInfo, unknown>>;
  try {
    v = JSON.parse(Buffer.from(value, 'base64url').toString('utf8')) as typeof v;
  } catch {
    throw bad('is not base64url JSON');
  }
  const num = (x: unknown): x is number => typeof x === 'number' && Number.isFinite(x) && x >= 0;
  if (typeof v !== 'object' || v === null) throw bad('is not an object');
  if (typeof v.id !== 'string' || !JOB_ID.test(v.id)) throw bad(`has no id matching ${JOB_ID.source}`);
  if (typeof v.name !== 'string' || v.name.length > 256) throw bad('has no name');
  if (!num(v.startedAt) || !num(v.cpuSecondsBefore)) throw bad('has no startedAt or cpuSecondsBefore');
  if (v.dirtyBytesPerSecond !== undefined && !num(v.dirtyBytesPerSecond))
    throw bad('has a dirtyBytesPerSecond that is not a number of bytes');
  if (
    !Array.isArray(v.hops) ||
    v.hops.length > MAX_HOPS ||
    !v.hops.every((h) => typeof h === 'string' && h.length < 300)
  )
    throw bad(`has no hops (at most ${MAX_HOPS} host:port)`);
  const c = v.checkpoint as Partial<JobCheckpoints> | undefined;
  if (
    c !== undefined &&
    (typeof c !== 'object' ||
      c === null ||
      !num(c.everyMs) ||
      c.everyMs < MIN_CHECKPOINT_MS ||
      typeof c.sharedDir !== 'string' ||
      !c.sharedDir.startsWith('/'))
  )
    throw bad(
      `has a checkpoint that is not { everyMs >= ${MIN_CHECKPOINT_MS}, sharedDir: an absolute path }`,
    );
  return {
    id: v.id,
    name: v.name,
    startedAt: v.startedAt,
    hops: v.hops as string[],
    pinned: v.pinned === true,
    cpuSecondsBefore: v.cpuSecondsBefore,
    ...(v.dirtyBytesPerSecond === undefined ? {} : { dirtyBytesPerSecond: v.dirtyBytesPerSecond }),
    ...(c === undefined ? {} : { checkpoint: { everyMs: c.everyMs!, sharedDir: c.sharedDir! } }),
  };
}
