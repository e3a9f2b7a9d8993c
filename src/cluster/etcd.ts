// The cluster's shared state in etcd (docs/BALANCING.md, "etcd"), the one module that speaks to it:
//   /ferry/hosts/<host:port>    an agent's registration and load, under its lease (gone when it dies)
//   /ferry/leader               the acting balancer's id, under its lease
//   /ferry/intents/<job>        a move or recovery the leader began and has not seen end
//   /ferry/jobs/<job>           a checkpointed job: where it runs, its latest checkpoint, and the
//                               copies the cluster replaced (for the agents that held them to kill)
// Every write that acts for the leader is a transaction on /ferry/leader still naming it: a balancer
// that lost its leadership while paused cannot start anything when it wakes.
import type { Etcd3, Lease } from 'etcd3';
import { etcd3 } from '../sys/packages.js';
import { FerryError } from '../errors.js';
import type { JobReport, LoadReport } from '../agent/jobs.js';

const ROOT = '/ferry/';
const HOSTS = `${ROOT}hosts/`;
const LEADER = `${ROOT}leader`;
const INTENTS = `${ROOT}intents/`;
const JOBS = `${ROOT}jobs/`;
const DIAL_TIMEOUT_MS = 3_000;
const CAMPAIGN_EVERY_MS = 400;

/** What an agent publishes about itself: where it is, and its load (without its history). */
export interface HostRecord {
  endpoint: string;
  at: number;
  load: Omit<LoadReport, 'history'>;
}

/** A move (or a recovery) a leader began. */
export interface Intent {
  kind: 'move' | 'recover';
  job: string;
  name: string;
  from: string;
  to: string;
  reason: string;
  leader: string;
  at: number;
}

/** A copy of a job the cluster replaced: the agent at `host` kills it, if it still runs. */
export interface Replaced {
  host: string;
  pid: number;
  /** /proc/<pid>/stat's starttime: the same PID reused by another process is left alone. */
  startTime: number;
}

/** A job checkpointed into the shared directory (`ferry run --checkpoint-every`). */
export interface JobRecord {
  id: string;
  name: string;
  /** The agent it runs on now, with its PID there. */
  host: string;
  pid: number;
  startTime: number;
  /** Its latest complete checkpoint (an image directory all hosts see), and when it was taken. */
  checkpoint?: string;
  checkpointAt?: number;
  everyMs: number;
  sharedDir: string;
  replaced: Replaced[];
  job: Pick<JobReport, 'pinned'> & { startedAt: number; hops: string[]; cpuSecondsBefore: number };
}

export interface Registration {
  /** Whether the lease is known alive: renewed less than its TTL ago. */
  alive(): boolean;
  close(): Promise<void>;
}

export interface Leadership {
  leading(): boolean;
  stop(): Promise<void>;
}

export class ClusterStore {
  private readonly client: Etcd3;

  constructor(readonly urls: string[]) {
    if (urls.length === 0) throw new FerryError('FERRY_USAGE', 'give etcd: --etcd http://host:port,...');
    for (const u of urls)
      if (!/^https?:\/\/[^/]+\/?$/.test(u))
        throw new FerryError('FERRY_USAGE', `--etcd takes http://host:port URLs, not ${u}`);
    this.client = new (etcd3().Etcd3)({ hosts: urls, dialTimeout: DIAL_TIMEOUT_MS });
  }

  /** Fail now, clearly, when etcd does not answer. */
  async check(): Promise<void> {
    try {
      await this.client.get(LEADER).string();
    } catch (err) {
      throw new FerryError(
        'FERRY_CONNECTION',
        `etcd at ${this.urls.join(',')} does not answer: ${message(err)}`,
      );
    }
  }

  /**
   * Keep `host` registered under a lease of `ttlSeconds`, its record from `publish()` written every
   * `everyMs`. `onLost` hears that the lease is gone (etcd said so) or no longer to be trusted
   * (unrenewed for two thirds of its TTL): the host may have been given up for dead; registration
   * starts again after `onLost`.
   */
  async register(
    host: string,
    ttlSeconds: number,
    everyMs: number,
    publish: () => HostRecord,
    onLost: (why: string) => Promise<void>,
  ): Promise<Registration> {
    let lease: Lease | undefined;
    let renewed = 0;
    let closed = false;
    let timer: NodeJS.Timeout | undefined;
    let lost = false;
    const write = async (): Promise<void> => {
      if (closed || lost || !lease) return;
      await lease.put(HOSTS + host).value(JSON.stringify(publish()));
    };
    const start = async (): Promise<void> => {
      lease = this.client.lease(ttlSeconds);
      lease.on('keepaliveSucceeded', () => (renewed = Date.now()));
      lease.on('lost', (err) => void lose(message(err)));
      await lease.grant();
      renewed = Date.now();
      lost = false;
      await write();
    };
    const lose = async (why: string): Promise<void> => {
      if (lost || closed) return;
      lost = true;
      lease?.release();
      await onLost(why).catch(() => undefined);
      if (!closed) await retry(start);
    };
    const retry = async (f: () => Promise<void>): Promise<void> => {
      for (;;) {
        if (closed) return;
        try {
          return await f();
        } catch {
          await new Promise((r) => setTimeout(r, 500));
        }
      }
    };
    // Two thirds of the TTL: the host stops trusting its lease before etcd can give it up for dead.
    const alive = (): boolean =>
      !lost && lease !== undefined && Date.now() - renewed < (ttlSeconds * 1000 * 2) / 3;
    const tick = (): void => {
      if (closed) return;
      // A host paused past its TTL (SIGSTOP, a frozen VM) learns it here before etcd says so.
      if (lease && !lost && !alive()) void lose('the lease went unrenewed past its TTL');
      write()
        .catch(() => undefined)
        .finally(() => {
          if (!closed) timer = setTimeout(tick, everyMs);
        });
    };
    await start();
    tick();
    return {
      alive,
      close: async () => {
        closed = true;
        clearTimeout(timer);
        await lease?.revoke().catch(() => undefined);
      },
    };
  }

  /** Every registered host's record. */
  async hosts(): Promise<HostRecord[]> {
    return this.under<HostRecord>(HOSTS);
  }

  /** Every value under `prefix`, parsed (one that is not JSON is passed over). */
  private async under<T>(prefix: string): Promise<T[]> {
    const all = await this.client.getAll().prefix(prefix).strings();
    return Object.values(all).flatMap((v) => parse<T>(v) ?? []);
  }

  /**
   * Campaign for leadership as `id` until stopped: `onElected` when this one leads, `onDeposed`
   * when it no longer does (its lease lost); then it campaigns again.
   */
  campaign(
    id: string,
    ttlSeconds: number,
    onElected: () => void,
    onDeposed: (why: string) => void,
  ): Leadership {
    let stopped = false;
    let lease: Lease | undefined;
    let leading = false;
    let timer: NodeJS.Timeout | undefined;
    const depose = (why: string): void => {
      if (!leading) return;
      leading = false;
      onDeposed(why);
    };
    const attempt = async (): Promise<void> => {
      if (!lease) {
        lease = this.client.lease(ttlSeconds);
        lease.on('lost', (err) => {
          lease = undefined;
          depose(`lost its leadership lease: ${message(err)}`);
        });
      }
      const id64 = await lease.grant();
      const won = await this.client
        .if(LEADER, 'Create', '==', 0)
        .then(this.client.put(LEADER).value(id).lease(id64))
        .commit();
      if (won.succeeded && !stopped) {
        leading = true;
        onElected();
      }
    };
    const loop = (): void => {
      if (stopped) return;
      (leading ? Promise.resolve() : attempt())
        .catch(() => undefined)
        .finally(() => {
          if (!stopped) timer = setTimeout(loop, CAMPAIGN_EVERY_MS);
        });
    };
    loop();
    return {
      leading: () => leading,
      stop: async () => {
        stopped = true;
        clearTimeout(timer);
        leading = false;
        await lease?.revoke().catch(() => undefined);
      },
    };
  }

  /** Who leads now, if anyone. */
  async leader(): Promise<string | undefined> {
    return (await this.client.get(LEADER).string()) ?? undefined;
  }

  /** Write `intent` if `leader` still leads and no other intent holds its job; whether it was. */
  async begin(intent: Intent): Promise<boolean> {
    const done = await this.client
      .if(LEADER, 'Value', '==', intent.leader)
      .and(INTENTS + intent.job, 'Create', '==', 0)
      .then(this.client.put(INTENTS + intent.job).value(JSON.stringify(intent)))
      .commit();
    return done.succeeded;
  }

  async end(job: string): Promise<void> {
    await this.client.delete().key(INTENTS + job);
  }

  async intents(): Promise<Intent[]> {
    return this.under<Intent>(INTENTS);
  }

  async job(id: string): Promise<JobRecord | undefined> {
    const v = await this.client.get(JOBS + id).string();
    return v === null ? undefined : parse<JobRecord>(v);
  }

  /**
   * Change job `id`'s record with `change` (undefined: delete it; the record it was given: leave it
   * as it is), retried while another writer races it.
   */
  async updateJob(id: string, change: (r: JobRecord | undefined) => JobRecord | undefined): Promise<void> {
    for (;;) {
      const got = await this.client.get(JOBS + id).exec();
      const kv = got.kvs[0];
      const current = kv ? parse<JobRecord>(kv.value.toString()) : undefined;
      const next = change(current);
      if (next === current && (current !== undefined || !kv)) return; // (a record not JSON goes)
      const txn = kv
        ? this.client.if(JOBS + id, 'Mod', '==', kv.mod_revision)
        : this.client.if(JOBS + id, 'Create', '==', 0);
      const write = next
        ? this.client.put(JOBS + id).value(JSON.stringify(next))
        : this.client.delete().key(JOBS + id);
      if ((await txn.then(write).commit()).succeeded) return;
    }
  }

  async jobs(): Promise<JobRecord[]> {
    return this.under<JobRecord>(JOBS);
  }

  close(): void {
    this.client.close();
  }
}

function parse<T>(text: string): T | undefined {
  try {
    return JSON.parse(text) as T;
  } catch {
    return undefined;
  }
}

function message(err: unknown): string {
  // gRPC's own words end in a note on name resolution that says nothing here.
  return (err instanceof Error ? err.message : String(err)).replace(/\.?\s*Resolution note:.*$/s, '');
}
