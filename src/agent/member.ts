// An agent as a member of an etcd cluster (`ferry agent --etcd`, docs/BALANCING.md "etcd"): it
// registers under a lease and publishes its load; it keeps the records of its checkpointed jobs
// (where each runs, its latest checkpoint); it restores a dead host's job from its checkpoint when
// the leader asks; and it fences: a copy of a job that the cluster has restored elsewhere, or may
// restore, is killed here, never resumed.
//   - Started: before it serves anything, it kills every copy of a checkpointed job an earlier run
//     of this agent left (the records name this host), and hands those jobs to the leader to
//     restore from their checkpoints.
//   - Its lease lapsed (etcd said so, or it went unrenewed for two thirds of its TTL, before etcd
//     can have given the host up): it serves nothing, kills its checkpointed jobs and hands them to
//     the leader likewise, then registers again.
//   - Every second: any copy here that a record says the cluster replaced is killed.
import { closeSync, rmSync } from 'node:fs';
import { basename, dirname } from 'node:path';
import { FerryError } from '../errors.js';
import { readImage } from '../read-image.js';
import { restore } from '../restore.js';
import { parseStat } from '../proc/stat.js';
import { readProcText } from '../proc/files.js';
import { killGroup, SIG } from '../sys/signal.js';
import { pidfdExited, pidfdOpen, pidfdSendSignal } from '../sys/pidfd.js';
import type { ClusterStore, HostRecord, JobRecord, Registration } from '../cluster/etcd.js';
import type { Jobs } from './jobs.js';
import { restoredProcess, type ManagedProcess, type Registry } from './registry.js';

export interface MemberOptions {
  store: ClusterStore;
  /** This agent's address as the cluster knows it (host:port). */
  self: string;
  ttlSeconds: number;
  registry: Registry;
  jobs: Jobs;
  /** Check an image's seal (the cluster's shared image key). */
  verify: (dir: string) => void;
  onWarning?: (message: string) => void;
}

const PUBLISH_MS = 1_000;

/** starttime of `pid`, or undefined if no such process. */
function startTimeOf(pid: number): number | undefined {
  try {
    return Number(parseStat(readProcText(pid, 'stat')).startTime);
  } catch {
    return undefined;
  }
}

export class Member {
  /** Refusing every request: starting, or fencing after its lease lapsed. */
  fenced = true;
  /** The jobs this agent's records name as running here: id → PID. */
  private readonly claimed = new Map<string, number>();
  private registration: Registration | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(private readonly o: MemberOptions) {}

  /** Fence what an earlier run left, then register. Serve only once this resolves. */
  async start(): Promise<void> {
    await this.o.store.check();
    for (const r of await this.o.store.jobs()) {
      if (r.host === this.o.self)
        await this.abandon(r.id, r.pid, r.startTime, 'left by an earlier run of this agent');
      await this.killReplaced(r);
    }
    this.registration = await this.o.store.register(
      this.o.self,
      this.o.ttlSeconds,
      PUBLISH_MS,
      () => this.record(),
      (why) => this.lost(why),
    );
    this.fenced = false;
    this.tick();
  }

  /** Whether requests may be served: not fencing, and the lease renewed within its TTL. */
  serving(): boolean {
    return !this.fenced && (this.registration?.alive() ?? false);
  }

  private record(): HostRecord {
    const { history: _history, ...load } = this.o.jobs.load();
    return { endpoint: this.o.self, at: Date.now(), load };
  }

  /** The lease lapsed: kill every checkpointed job here, for the leader to restore from its checkpoint. */
  private async lost(why: string): Promise<void> {
    this.fenced = true;
    this.o.onWarning?.(
      `lost this host's etcd lease (${why}): its checkpointed jobs go, to be restored from their checkpoints`,
    );
    for (const [id, pid] of [...this.claimed]) {
      await this.o.jobs.fence(id);
      this.claimed.delete(id);
      // etcd out of reach: the leader sees this host's registration gone all the same.
      await this.handOver(id, pid).catch(() => undefined);
    }
    this.fenced = false;
  }

  /**
   * Kill the copy `pid` of job `id` an earlier run of this agent left (if it is still that process),
   * and mark the job's record for the leader to restore.
   */
  private async abandon(id: string, pid: number, startTime: number, why: string): Promise<void> {
    if (killCopy(pid, startTime))
      this.o.onWarning?.(
        `killed job ${id} (PID ${pid}), ${why}: the cluster restores it from its checkpoint`,
      );
    await this.handOver(id, pid);
  }

  /**
   * Give job `id` up to the leader to restore elsewhere (from `checkpoint` when given, else its
   * last), if its record still names copy `pid` here.
   */
  private handOver(id: string, pid: number, checkpoint?: string): Promise<void> {
    return this.o.store.updateJob(id, (r) =>
      r && r.host === this.o.self && r.pid === pid
        ? { ...r, host: '', ...(checkpoint ? { checkpoint, checkpointAt: Date.now() } : {}) }
        : r,
    );
  }

  /** Kill the copies of `r` here that the cluster replaced, and strike them from its record. */
  private async killReplaced(r: JobRecord): Promise<void> {
    const mine = r.replaced.filter((c) => c.host === this.o.self);
    if (mine.length === 0) return;
    for (const c of mine) {
      const managed = this.o.registry.job(r.id);
      if (managed?.pid === c.pid) await this.o.jobs.fence(r.id);
      else if (!killCopy(c.pid, c.startTime)) continue;
      this.claimed.delete(r.id);
      this.o.onWarning?.(`killed job ${r.id} (PID ${c.pid}): the cluster restored it on ${r.host}`);
    }
    await this.o.store.updateJob(r.id, (now) =>
      now ? { ...now, replaced: now.replaced.filter((c) => c.host !== this.o.self) } : now,
    );
  }

  private tick(): void {
    if (this.closed) return;
    this.reconcile()
      .catch((err: unknown) =>
        this.o.onWarning?.(`etcd: ${err instanceof Error ? err.message : String(err)}`),
      )
      .finally(() => {
        if (!this.closed) this.timer = setTimeout(() => this.tick(), PUBLISH_MS);
      });
  }

  /** Kill replaced copies; claim the checkpointed jobs that run here; forget those that ended. */
  private async reconcile(): Promise<void> {
    if (this.fenced) return;
    const records = new Map((await this.o.store.jobs()).map((r) => [r.id, r]));
    for (const r of records.values()) await this.killReplaced(r);
    for (const [id, pid] of this.claimed) {
      const p = this.o.registry.get(pid);
      if (p?.state === 'running') continue;
      this.claimed.delete(id);
      if (p?.state === 'migrated') continue; // where it went claims it
      // It ended here: nothing is left to restore. (Its checkpoint loop removes its checkpoints as
      // it ends; not if the job ended while no loop ran, a failed one waiting to try again.)
      const r = records.get(id);
      await this.o.store.updateJob(id, (now) =>
        now && now.host === this.o.self && now.pid === pid ? undefined : now,
      );
      if (r?.checkpoint && r.host === this.o.self)
        rmSync(dirname(r.checkpoint), { recursive: true, force: true });
    }
    for (const p of this.o.registry.list())
      if (p.state === 'running' && p.job?.checkpoint && this.claimed.get(p.job.id) !== p.pid)
        await this.claim(p);
  }

  /** Record job `p` as running here (it started here or arrived), with its latest checkpoint if given. */
  async claim(p: ManagedProcess, checkpoint?: string): Promise<void> {
    const job = p.job!;
    const startTime = startTimeOf(p.pid);
    if (!job.checkpoint || startTime === undefined || this.fenced) return;
    let replaced = false;
    await this.o.store.updateJob(job.id, (r) => {
      // Restored elsewhere while this copy ran on: this copy is killed, never recorded again.
      replaced = r?.replaced.some((c) => c.host === this.o.self && c.pid === p.pid) ?? false;
      if (replaced) return r;
      return {
        id: job.id,
        name: job.name,
        host: this.o.self,
        pid: p.pid,
        startTime,
        everyMs: job.checkpoint!.everyMs,
        sharedDir: job.checkpoint!.sharedDir,
        replaced: r?.replaced ?? [],
        job: {
          pinned: job.pinned,
          startedAt: job.startedAt,
          hops: job.hops,
          cpuSecondsBefore: job.cpuSecondsBefore,
        },
        ...(checkpoint
          ? { checkpoint, checkpointAt: Date.now() }
          : r?.checkpoint
            ? { checkpoint: r.checkpoint, checkpointAt: r.checkpointAt }
            : {}),
      };
    });
    if (!replaced) this.claimed.set(job.id, p.pid);
  }

  /** Restore job `id` from its latest checkpoint (POST /v1/jobs/:id/recover, from the leader). */
  async recover(id: string): Promise<ManagedProcess> {
    const r = await this.o.store.job(id);
    if (!r) throw new FerryError('FERRY_NO_SUCH_PROCESS', `etcd has no record of job ${id}`);
    if (!r.checkpoint) throw new FerryError('FERRY_IMAGE_INVALID', `job ${id} has no checkpoint yet`);
    if (this.o.registry.job(id)) throw new FerryError('FERRY_BUSY', `job ${id} runs here already`);
    this.o.jobs.open('it takes no job in');
    this.o.verify(r.checkpoint);
    const image = await readImage(r.checkpoint);
    const result = await restore(image, { tty: 'null', samePid: 'try' });
    const p = restoredProcess(result, image.manifest.state, {
      id,
      name: r.name,
      startedAt: r.job.startedAt,
      hops: [...r.job.hops, ...(r.host ? [r.host] : [])],
      pinned: r.job.pinned,
      cpuSecondsBefore: r.job.cpuSecondsBefore,
      arrivedAt: Date.now(),
      checkpoint: { everyMs: r.everyMs, sharedDir: r.sharedDir },
    });
    this.o.registry.add(p);
    const startTime = startTimeOf(p.pid)!;
    // The copy it replaces, wherever it still runs, is killed by its agent (here, at once).
    await this.o.store.updateJob(id, (now) => {
      const was = now ?? r;
      const left = was.host && was.host !== this.o.self;
      return {
        ...was,
        host: this.o.self,
        pid: p.pid,
        startTime,
        replaced: [
          ...was.replaced,
          ...(left ? [{ host: was.host, pid: was.pid, startTime: was.startTime }] : []),
        ],
      };
    });
    this.claimed.set(id, p.pid);
    this.o.onWarning?.(
      `restored job ${id} from its checkpoint ${basename(r.checkpoint)} of ${new Date(r.checkpointAt ?? 0).toISOString()}`,
    );
    return p;
  }

  /**
   * Stop: each checkpointed job here is checkpointed once more and ended, and handed to the leader
   * to restore elsewhere from that checkpoint (its orphan would otherwise run on beside the copy the
   * cluster restores once this host's lease is gone); then the lease goes.
   */
  async close(): Promise<void> {
    this.closed = true;
    clearTimeout(this.timer);
    this.fenced = true;
    for (const [id, pid] of [...this.claimed]) {
      const image = await this.o.jobs.handOver(id);
      this.claimed.delete(id);
      await this.handOver(id, pid, image).catch((err: unknown) =>
        this.o.onWarning?.(`job ${id}: etcd did not take its hand-over: ${String(err)}`),
      );
      this.o.onWarning?.(
        `stopped job ${id} for the cluster to restore elsewhere from ${image ?? 'its last checkpoint'}`,
      );
    }
    await this.registration?.close();
    this.o.store.close();
  }
}

/** How long a killed copy is waited for. */
const KILL_WAIT_MS = 2000;

/**
 * SIGKILL copy `pid` of a job (with its process group) if it is still the process that started at
 * `startTime` (through a pidfd: a PID reused meanwhile is left alone), and wait until it is gone;
 * whether it was.
 */
function killCopy(pid: number, startTime: number): boolean {
  let pidfd: number;
  try {
    pidfd = pidfdOpen(pid);
  } catch {
    return false; // ended
  }
  try {
    const stat = parseStat(readProcText(pid, 'stat'));
    if (Number(stat.startTime) !== startTime) return false;
    if (stat.pgrp === pid) killGroup(pid, SIG.SIGKILL);
    pidfdSendSignal(pidfd, SIG.SIGKILL);
    // Gone before the agent goes on (serves, or says the copy is struck off): a copy dying slowly
    // on a busy host still ran for that while.
    pidfdExited(pidfd, KILL_WAIT_MS);
    return true;
  } catch {
    return false; // ended meanwhile
  } finally {
    closeSync(pidfd);
  }
}
