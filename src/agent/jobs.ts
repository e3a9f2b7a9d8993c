// The agent's managed jobs (docs/BALANCING.md): started by `ferry run` (the agent is their parent),
// or arrived by a migration; measured for the balancer (GET /v1/load), and moved to another agent
// on request (POST /v1/jobs/:id/migrate), one at a time. Every request to move one, and how it
// ended, is kept in the agent's history.
import { randomBytes } from 'node:crypto';
import { accessSync, constants, existsSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { basename, isAbsolute, join } from 'node:path';
import { FerryError, isFerryError } from '../errors.js';
import { capacityOf, type CpuCgroup } from '../cluster/cgroup.js';
import { JOB_ID, MIN_CHECKPOINT_MS, type JobCheckpoints } from '../cluster/job.js';
import { dumpEvery, nextCheckpoint } from '../periodic.js';
import { dump } from '../checkpoint.js';
import { LoadMonitor } from '../cluster/load.js';
import { hostMemory } from '../proc/meminfo.js';
import { callAgent, parseAddress } from '../migrate/client.js';
import { migrate, type MigrateMode } from '../migrate/migrate.js';
import { posixSpawn } from '../sys/spawn.js';
import { killGroup, SIG } from '../sys/signal.js';
import { parseStat } from '../proc/stat.js';
import { readProcText } from '../proc/files.js';
import type { Caller } from './auth.js';
import type { ManagedProcess, Registry } from './registry.js';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_CREAT = 0o100;
const O_APPEND = 0o2000;
const SAMPLE_MS = 500;
const HISTORY = 500;
/** Until a pre-copy measures a job's writes: a guess of the share of its memory it writes per second. */
const GUESSED_DIRTY_SHARE = 0.02;

export interface RunRequest {
  argv: string[];
  cwd: string;
  env: string[];
  name?: string;
  stdout?: string;
  stderr?: string;
  noMigrate?: boolean;
  checkpoint?: JobCheckpoints;
}

export type Outcome = 'moving' | 'moved' | 'failed' | 'exited' | 'in-doubt' | 'refused';

export interface HistoryEntry {
  at: number;
  job: string;
  name: string;
  from: string;
  to: string;
  /** Why the balancer (or an operator) asked. */
  reason: string;
  outcome: Outcome;
  /** When it ended, and what it measured. */
  endedAt?: number;
  downtimeMs?: number;
  totalMs?: number;
  bytes?: number;
  targetPid?: number;
  error?: string;
}

export interface JobReport {
  id: string;
  name: string;
  pid: number;
  command: string;
  pinned: boolean;
  /** CPU seconds on every host so far, and cores used lately. */
  cpuSeconds: number;
  cpuRate: number;
  demand: number;
  rssBytes: number;
  /** As its last pre-copy move measured it, else a guess: GUESSED_DIRTY_SHARE of RSS per CPU-second. */
  dirtyBytesPerSecond: number;
  dirtySource: 'pre-copy' | 'guess';
  ageMs: number;
  sinceMoveMs?: number;
  hops: string[];
  processes: number;
}

export interface LoadReport {
  host: {
    hostname: string;
    /** Cores the jobs may use: the cgroup's quota, else every CPU. */
    capacity: number;
    cgroup: { path: string; version: 1 | 2; quotaCores: number | null } | null;
    /** Cores the jobs want, and use. */
    demand: number;
    cpuUse: number;
    /** demand / capacity: above 1, jobs wait for a CPU. */
    load: number;
    /** CPU pressure of the cgroup (some avg10, percent), where PSI is. */
    pressure: number | null;
    memAvailableBytes: number;
    memTotalBytes: number;
    /** A migration in or out is under way. */
    busy: boolean;
    /** Drained (`ferry drain`): it takes no new job until undrained. */
    drained: boolean;
  };
  jobs: JobReport[];
  history: HistoryEntry[];
}

export interface JobsOptions {
  registry: Registry;
  /** Where the agent keeps whether it is drained, across restarts. */
  dataDir: string;
  cgroup: CpuCgroup | undefined;
  /** TLS CA of the other agents (they speak TLS). */
  peerCa?: Buffer;
  /** Migrations coming in now. */
  incoming: () => number;
  onWarning?: (message: string) => void;
  /** Seal a checkpoint just written (the agent's image key), so that any agent of the cluster restores it. */
  seal: (image: string) => void;
  /** Hears each checkpoint of a job (`ferry run --checkpoint-every`), once sealed. */
  onCheckpoint?: (p: ManagedProcess, image: string) => void;
}

/** Checkpoints kept of a job: the newest, and the one before while the newest is written. */
const CHECKPOINTS_KEPT = 2;

export class Jobs {
  private readonly monitor = new LoadMonitor();
  private readonly history: HistoryEntry[] = [];
  private outgoing: HistoryEntry | undefined;
  private readonly timer: NodeJS.Timeout;
  /** The checkpoint loops of the jobs here that take them, and when a failed one may start again. */
  private readonly checkpoints = new Map<string, { stop: AbortController; done: Promise<void> }>();
  private readonly retryAt = new Map<string, number>();

  constructor(private readonly o: JobsOptions) {
    this.timer = setInterval(() => this.sample(), SAMPLE_MS);
    this.timer.unref();
  }

  private get drainedFile(): string {
    return join(this.o.dataDir, 'drained');
  }

  /** Drained: no new job starts or arrives here until undrained (kept across restarts). */
  get drained(): boolean {
    return existsSync(this.drainedFile);
  }

  drain(caller: Caller, drained: boolean): void {
    mayManage(caller);
    if (drained) writeFileSync(this.drainedFile, `${new Date().toISOString()}\n`);
    else rmSync(this.drainedFile, { force: true });
  }

  /** Refuse a new job here while drained. */
  open(what: string): void {
    if (this.drained)
      throw new FerryError('FERRY_BUSY', `this agent is drained: ${what} (ferry undrain it first)`);
  }

  private live(): ManagedProcess[] {
    // A job held for a migration coming in is not here yet: it still runs at its source.
    return this.o.registry.list().filter((p) => p.job && p.state === 'running');
  }

  private sample(): void {
    const live = this.live();
    this.monitor.sample(live.map((p) => p.pid));
    for (const p of live) this.checkpoint(p);
  }

  /** Checkpoint job `p` periodically, if it asked to be, wherever it runs now. */
  private checkpoint(p: ManagedProcess): void {
    const job = p.job!;
    const c = job.checkpoint;
    if (!c || this.checkpoints.has(job.id) || this.outgoing?.job === job.id) return;
    if ((this.retryAt.get(job.id) ?? 0) > Date.now()) return;
    const stop = new AbortController();
    const dir = join(c.sharedDir, job.id);
    let first: string | undefined;
    const done = dumpEvery(p.pid, {
      dir,
      intervalMs: c.everyMs,
      keep: CHECKPOINTS_KEPT,
      signal: stop.signal,
      onWarning: this.o.onWarning,
      onDump: (r) => {
        this.o.seal(r.image);
        // What the hosts it ran on before left is of no more use once it has a checkpoint here.
        first ??= basename(r.image);
        for (const old of readdirSync(dir))
          if (/^\d{6}$/.test(old) && old < first) rmSync(join(dir, old), { recursive: true, force: true });
        this.o.onCheckpoint?.(p, r.image);
      },
    })
      .then(
        () => undefined,
        (err: unknown) => {
          this.retryAt.set(job.id, Date.now() + c.everyMs);
          if (p.state === 'running')
            this.o.onWarning?.(
              `job ${job.id}: a checkpoint failed (tried again in ${c.everyMs} ms): ${String(err)}`,
            );
        },
      )
      .finally(() => {
        this.checkpoints.delete(job.id);
        // A job that has ended (by itself, or killed on request) needs its checkpoints no more; one
        // stopped to be moved, handed over or fenced still runs as its checkpoints end.
        this.o.registry.list(); // reaps it, if it ended
        const now = this.o.registry.get(p.pid);
        if (!now || now.state === 'exited') rmSync(dir, { recursive: true, force: true });
      });
    this.checkpoints.set(job.id, { stop, done });
  }

  /** Stop job `id`'s checkpoints (before it is moved or killed); resolves once none is being taken. */
  private async stopCheckpoints(id: string): Promise<void> {
    const loop = this.checkpoints.get(id);
    loop?.stop.abort();
    await loop?.done;
  }

  /** Start a job (POST /v1/jobs). */
  run(request: RunRequest, caller: Caller): ManagedProcess {
    mayManage(caller);
    this.open('it starts no job');
    const path = resolveProgram(request.argv[0]!, request.cwd, request.env);
    const id = `${basename(request.argv[0]!).replace(/[^A-Za-z0-9._-]/g, '') || 'job'}-${randomBytes(4).toString('hex')}`;
    const name = request.name ?? id;
    const output = (fd: number, file: string | undefined) =>
      ({
        kind: 'open',
        fd,
        path: file ?? '/dev/null',
        flags: O_WRONLY | O_CREAT | O_APPEND,
        mode: 0o644,
      }) as const;
    const pid = posixSpawn(path, request.argv, {
      env: request.env,
      setsid: true,
      fileActions: [
        { kind: 'chdir', path: request.cwd },
        { kind: 'open', fd: 0, path: '/dev/null', flags: O_RDONLY },
        output(1, request.stdout),
        output(2, request.stderr),
        { kind: 'closefrom', fd: 3 },
      ],
    });
    const p: ManagedProcess = {
      pid,
      originalPid: pid,
      uid: 0,
      command: basename(path),
      origin: 'run',
      state: 'running',
      since: Date.now(),
      job: {
        id,
        name,
        startedAt: Date.now(),
        hops: [],
        pinned: request.noMigrate === true,
        cpuSecondsBefore: 0,
        ...(request.checkpoint ? { checkpoint: request.checkpoint } : {}),
      },
    };
    this.o.registry.add(p);
    return p;
  }

  /** Move job `id` to the agent at `to` (POST /v1/jobs/:id/migrate); resolves when it has ended. */
  async migrate(
    id: string,
    request: { to: string; self: string; reason: string; mode: MigrateMode; maxDowntimeMs?: number },
    caller: Caller,
  ): Promise<HistoryEntry> {
    mayManage(caller);
    const p = this.o.registry.job(id);
    if (!p) throw new FerryError('FERRY_NO_SUCH_PROCESS', `no job ${id} runs here`);
    const entry: HistoryEntry = {
      at: Date.now(),
      job: id,
      name: p.job!.name,
      from: request.self,
      to: request.to,
      reason: request.reason,
      outcome: 'moving',
    };
    this.record(entry);
    const refuse = (why: string): never => {
      entry.outcome = 'refused';
      entry.error = why;
      entry.endedAt = Date.now();
      throw new FerryError('FERRY_BUSY', why);
    };
    if (p.job!.pinned) refuse(`job ${id} was started with --no-migrate`);
    if (p.state !== 'running') refuse(`job ${id} is ${p.state}, not running`);
    if (this.outgoing) refuse(`job ${this.outgoing.job} is being moved from here already`);
    this.outgoing = entry;
    await this.stopCheckpoints(id); // a checkpoint under way has the process seized
    const target = { ...parseAddress(request.to), token: caller.token?.toString(), ca: this.o.peerCa };
    try {
      const load = this.monitor.job(p.pid);
      const result = await migrate(p.pid, {
        to: target,
        mode: request.mode,
        maxDowntimeMs: request.maxDowntimeMs,
        onWarning: this.o.onWarning,
        job: {
          ...p.job!,
          hops: [...p.job!.hops, request.self],
          cpuSecondsBefore: p.job!.cpuSecondsBefore + (load?.cpuSeconds ?? 0),
          arrivedAt: undefined,
        },
      });
      this.o.registry.migrated(p.pid, request.to);
      Object.assign(entry, {
        outcome: 'moved',
        downtimeMs: result.downtimeMs,
        totalMs: result.totalMs,
        bytes: result.bytesSent,
        targetPid: result.targetPid,
      });
      // What the move measured of its writes goes to where it runs now, for its next move.
      const last = result.precopyRounds.at(-1);
      if (last && last.ms > 0)
        await callAgent(
          target,
          'POST',
          `/v1/jobs/${encodeURIComponent(id)}/measured`,
          { dirtyBytesPerSecond: Math.round(last.leftBytes / (last.ms / 1000)) },
          10_000,
        ).catch((err: unknown) =>
          this.o.onWarning?.(`job ${id}: its dirty rate did not reach ${request.to}: ${String(err)}`),
        );
    } catch (err) {
      this.o.registry.list(); // reaps it, if it ended
      const ended = this.o.registry.get(p.pid)?.state === 'exited';
      entry.outcome = isFerryError(err, 'FERRY_MIGRATION_IN_DOUBT')
        ? 'in-doubt'
        : ended
          ? 'exited'
          : 'failed';
      entry.error = err instanceof Error ? err.message : String(err);
    } finally {
      entry.endedAt = Date.now();
      this.outgoing = undefined;
    }
    return entry;
  }

  /** What a move measured of job `id` (POST /v1/jobs/:id/measured, from the agent it came from). */
  measured(id: string, dirtyBytesPerSecond: number, caller: Caller): void {
    mayManage(caller);
    const p = this.o.registry.job(id);
    if (!p) throw new FerryError('FERRY_NO_SUCH_PROCESS', `no job ${id} runs here`);
    p.job!.dirtyBytesPerSecond = dirtyBytesPerSecond;
  }

  /** Kill job `id` (POST /v1/jobs/:id/kill): its process, which the agent reaps, and its group. */
  kill(id: string, caller: Caller): ManagedProcess {
    mayManage(caller);
    const p = this.o.registry.job(id);
    if (!p) throw new FerryError('FERRY_NO_SUCH_PROCESS', `no job ${id} runs here`);
    if (this.outgoing?.job === id)
      throw new FerryError('FERRY_BUSY', `job ${id} is being moved: kill it where it lands`);
    this.end(p);
    return p;
  }

  /**
   * Kill a checkpointed job that this host may no longer run (its lease lapsed: the cluster restores
   * it elsewhere from its checkpoint). Resolves once it is dead and reaped.
   */
  async fence(id: string): Promise<void> {
    const p = this.o.registry.job(id);
    if (!p) return;
    await this.stopCheckpoints(id);
    this.end(p);
  }

  /**
   * Checkpoint job `id` one last time and end it (the dump kills it): the agent is stopping, and the
   * cluster restores the job elsewhere from this checkpoint. Resolves to the image, or undefined if
   * the dump failed (the job is then killed, its last periodic checkpoint the one to restore).
   */
  async handOver(id: string): Promise<string | undefined> {
    const p = this.o.registry.job(id);
    const c = p?.job?.checkpoint;
    if (!p || !c) return undefined;
    await this.stopCheckpoints(id);
    const image = nextCheckpoint(join(c.sharedDir, id));
    try {
      await dump(p.pid, { dir: image, onWarning: this.o.onWarning });
      this.o.seal(image);
      this.o.registry.list(); // reaps it
      return image;
    } catch (err) {
      rmSync(image, { recursive: true, force: true });
      this.o.onWarning?.(
        `job ${id}: its last checkpoint failed, it goes back to the one before: ${String(err)}`,
      );
      if (this.o.registry.job(id)) this.end(p);
      return undefined;
    }
  }

  /** Kill job `p`, its process group, and any checkpoint being taken of it. */
  private end(p: ManagedProcess): void {
    this.checkpoints.get(p.job!.id)?.stop.abort(); // a checkpoint under way ends as the process does
    // Its process group too (a job leads its own, and the agent has not reaped it): its children.
    try {
      if (parseStat(readProcText(p.pid, 'stat')).pgrp === p.pid) killGroup(p.pid, SIG.SIGKILL);
    } catch {
      // it ended meanwhile: the registry reaps it below
    }
    this.o.registry.kill(p.pid);
  }

  private record(entry: HistoryEntry): void {
    this.history.push(entry);
    if (this.history.length > HISTORY) this.history.shift();
  }

  /** GET /v1/load. */
  load(): LoadReport {
    const now = Date.now();
    const cgroup = this.o.cgroup;
    const capacity = capacityOf(cgroup);
    const jobs = this.live().map((p) => report(p, this.monitor, now));
    const demand = jobs.reduce((n, j) => n + j.demand, 0);
    const memory = hostMemory();
    return {
      host: {
        hostname: hostname(),
        capacity,
        cgroup: cgroup
          ? { path: cgroup.path, version: cgroup.version, quotaCores: cgroup.quota() ?? null }
          : null,
        demand,
        cpuUse: jobs.reduce((n, j) => n + j.cpuRate, 0),
        load: demand / capacity,
        pressure: cgroup?.pressure() ?? null,
        memAvailableBytes: memory.availableBytes,
        memTotalBytes: memory.totalBytes,
        busy: this.outgoing !== undefined || this.o.incoming() > 0,
        drained: this.drained,
      },
      jobs,
      history: [...this.history],
    };
  }

  close(): void {
    clearInterval(this.timer);
    for (const loop of this.checkpoints.values()) loop.stop.abort();
  }
}

function report(p: ManagedProcess, monitor: LoadMonitor, now: number): JobReport {
  const job = p.job!;
  const load = monitor.job(p.pid);
  const rss = load?.rssBytes ?? 0;
  return {
    id: job.id,
    name: job.name,
    pid: p.pid,
    command: p.command,
    pinned: job.pinned,
    cpuSeconds: job.cpuSecondsBefore + (load?.cpuSeconds ?? 0),
    cpuRate: load?.cpuRate ?? 0,
    demand: load?.demand ?? 1,
    rssBytes: rss,
    dirtyBytesPerSecond:
      job.dirtyBytesPerSecond ?? rss * GUESSED_DIRTY_SHARE * Math.min(1, load?.cpuRate ?? 1),
    dirtySource: job.dirtyBytesPerSecond === undefined ? 'guess' : 'pre-copy',
    ageMs: now - job.startedAt,
    ...(job.arrivedAt === undefined ? {} : { sinceMoveMs: now - job.arrivedAt }),
    hops: job.hops,
    processes: load?.processes ?? 1,
  };
}

/** Jobs run as root: only a token not bound to another uid starts or moves them. */
function mayManage(caller: Caller): void {
  if (caller.uid !== undefined && caller.uid !== 0)
    throw new FerryError(
      'FERRY_AUTH',
      `this token acts for uid ${caller.uid}, and jobs run as root: use a token not bound to a uid`,
    );
}

/** The program `name` names: a path (from `cwd`), else the first executable of that name on PATH. */
function resolveProgram(name: string, cwd: string, env: readonly string[]): string {
  const executable = (path: string): boolean => {
    try {
      accessSync(path, constants.X_OK);
      return statSync(path).isFile();
    } catch {
      return false;
    }
  };
  if (name.includes('/')) {
    const path = isAbsolute(name) ? name : join(cwd, name);
    if (executable(path)) return path;
    throw new FerryError('FERRY_USAGE', `${name} is not an executable file`);
  }
  const path = env.find((e) => e.startsWith('PATH='))?.slice(5) ?? '/usr/local/bin:/usr/bin:/bin';
  for (const dir of path.split(':')) if (dir !== '' && executable(join(dir, name))) return join(dir, name);
  throw new FerryError('FERRY_USAGE', `${name}: no such program on PATH`);
}

/** Check a POST /v1/jobs body. */
export function parseRunRequest(body: Record<string, unknown>): RunRequest {
  const strings = (v: unknown): v is string[] => Array.isArray(v) && v.every((s) => typeof s === 'string');
  const bad = (why: string): FerryError => new FerryError('FERRY_USAGE', why);
  if (!strings(body.argv) || body.argv.length === 0) throw bad('"argv" must be a non-empty array of strings');
  if (typeof body.cwd !== 'string' || !isAbsolute(body.cwd)) throw bad('"cwd" must be an absolute path');
  if (!strings(body.env) || !body.env.every((e) => e.includes('=')))
    throw bad('"env" must be an array of KEY=value');
  for (const f of ['stdout', 'stderr'] as const)
    if (body[f] !== undefined && (typeof body[f] !== 'string' || !isAbsolute(body[f])))
      throw bad(`"${f}" must be an absolute path`);
  if (body.name !== undefined && (typeof body.name !== 'string' || !JOB_ID.test(body.name)))
    throw bad(`"name" must match ${JOB_ID.source}`);
  const directory = (path: string): void => {
    try {
      if (!statSync(path).isDirectory()) throw new Error('not a directory');
    } catch {
      throw bad(`the directory ${path} is not here`);
    }
  };
  directory(body.cwd);
  const every = body.checkpointEveryMs;
  if (every !== undefined) {
    if (typeof every !== 'number' || !Number.isInteger(every) || every < MIN_CHECKPOINT_MS)
      throw bad(`"checkpointEveryMs" must be a whole number of milliseconds, ${MIN_CHECKPOINT_MS} or more`);
    if (typeof body.sharedDir !== 'string' || !isAbsolute(body.sharedDir))
      throw bad('"sharedDir" must be the absolute path of a directory every host sees');
    directory(body.sharedDir);
  } else if (body.sharedDir !== undefined) throw bad('"sharedDir" goes with "checkpointEveryMs"');
  return {
    argv: body.argv,
    cwd: body.cwd,
    env: body.env,
    ...(typeof body.name === 'string' ? { name: body.name } : {}),
    ...(typeof body.stdout === 'string' ? { stdout: body.stdout } : {}),
    ...(typeof body.stderr === 'string' ? { stderr: body.stderr } : {}),
    noMigrate: body.noMigrate === true,
    ...(typeof every === 'number'
      ? { checkpoint: { everyMs: every, sharedDir: body.sharedDir as string } }
      : {}),
  };
}
