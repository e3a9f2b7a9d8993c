// The per-host daemon (docs/PROTOCOL.md): an HTTP(S) API over the library, behind bearer tokens.
// It dumps and restores on request, receives migrations, keeps the processes it restored (reaping
// them when they end), and reports itself to Prometheus at /metrics.
import { MIGRATE_MODES, type MigrateMode } from '../migrate/migrate.js';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { existsSync, mkdirSync, readdirSync, rmSync } from 'node:fs';
import { cpus, freemem, hostname, loadavg, release, totalmem } from 'node:os';
import { basename, join, resolve } from 'node:path';
import type { AddressInfo } from 'node:net';
import { dump } from '../checkpoint.js';
import { FerryError, isFerryError, type ErrorCode } from '../errors.js';
import { readImage } from '../read-image.js';
import { restore } from '../restore.js';
import { userProcessStat } from '../proc/process.js';
import { readProcText } from '../proc/files.js';
import { startWorkerThreads } from '../sys/call.js';
import { loadNativePackages } from '../sys/packages.js';
import { FERRY_VERSION } from '../version.js';
import { ANYONE, authenticate, authorize, type Caller, type TokenEntry } from './auth.js';
import { checkLeastPrivilege } from './privilege.js';
import { loadImageKey, sealImage, verifyImage } from '../image/mac.js';
import { metricsText } from './metrics.js';
import { MIGRATION_ID, Migrations } from './receive.js';
import { Registry, restoredProcess } from './registry.js';
import { parseAddress } from '../migrate/client.js';
import { Jobs, parseRunRequest } from './jobs.js';
import { openCgroup } from '../cluster/cgroup.js';
import { processTree } from '../cluster/load.js';
import { startBalancer, type DecisionEvent } from '../cluster/balancer.js';
import type { ClusterStore } from '../cluster/etcd.js';
import { Member } from './member.js';
import { checkListen } from './listen.js';

export interface AgentOptions {
  /** Address and port to listen on; port 0 picks a free one. */
  host: string;
  port: number;
  dataDir: string;
  /** Who may call; undefined: anyone who reaches it. */
  tokens: TokenEntry[] | undefined;
  tls?: { cert: Buffer; key: Buffer };
  /**
   * Serve plain HTTP on an address other than loopback, tokens and process memory in the clear;
   * without it, such an agent is refused (FERRY_USAGE).
   */
  insecure?: boolean;
  /** How long a connection may stay silent, and a held migration wait for its commit. */
  idleTimeoutMs?: number;
  /**
   * The key the agent seals the images it writes with, and without which it restores none (hex, 64
   * digits); undefined: `<data-dir>/image.key`, made on first start.
   */
  imageKeyFile?: string;
  /** Migration streams at once: in all (default 16), and per token (default 4); more are refused (429). */
  maxStreams?: number;
  maxStreamsPerToken?: number;
  /** GET /metrics without a token (for a Prometheus that scrapes without one). */
  metricsOpen?: boolean;
  /** Hears what went wrong without failing a request (a migration's prefill that gave up). */
  onWarning?: (message: string) => void;
  /** The cgroup every process it manages goes into, and its CPU quota in cores (the host's capacity). */
  cgroup?: { path: string; cpus?: number };
  /** The address other agents and the balancer reach this one at (default: the one it listens on). */
  advertise?: string;
  /** The CA that signed the other agents' certificates, when they speak TLS. */
  peerCa?: Buffer;
  /**
   * Receiver-initiated balancing: while this host has room, ask these agents (host:port) for work,
   * with `pullToken`.
   */
  pull?: {
    peers: string[];
    token: string | undefined;
    intervalMs?: number;
    onDecision?: (line: DecisionEvent) => void;
  };
  /**
   * A member of an etcd cluster: registered under a lease of `ttlSeconds`, its load published, its
   * checkpointed jobs recorded and fenced (src/agent/member.ts).
   */
  etcd?: { store: ClusterStore; ttlSeconds: number };
}

export interface Agent {
  /** host:port it listens on. */
  readonly address: string;
  close(): Promise<void>;
}

const DEFAULT_IDLE_MS = 30_000;
const DEFAULT_MAX_STREAMS = 16;
const DEFAULT_MAX_STREAMS_PER_TOKEN = 4;
/** A request's head must be in within this. */
const HEADERS_TIMEOUT_MS = 10_000;
const MAX_JSON = 1 << 20;
/** The statuses of a limit reached: too many at once, too large. */
const LIMITS = new Set([413, 429]);
const IMAGE_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** HTTP status for each kind of refusal. */
function statusOf(code: ErrorCode): number {
  switch (code) {
    case 'FERRY_AUTH':
      return 403;
    case 'FERRY_USAGE':
    case 'FERRY_BAD_VMA_SPEC':
      return 400;
    case 'FERRY_NO_SUCH_PROCESS':
      return 404;
    case 'FERRY_BUSY':
      return 409;
    case 'FERRY_INTERNAL':
      return 500;
    default:
      return 422;
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

async function readJson(req: IncomingMessage): Promise<Record<string, unknown>> {
  let text = '';
  for await (const chunk of req as AsyncIterable<Buffer>) {
    text += chunk.toString('utf8');
    if (text.length > MAX_JSON)
      throw new HttpError(413, `a request body over ${MAX_JSON} bytes, the most the agent reads`);
  }
  try {
    const value: unknown = JSON.parse(text === '' ? '{}' : text);
    if (typeof value === 'object' && value !== null && !Array.isArray(value))
      return value as Record<string, unknown>;
  } catch {
    // answered below
  }
  throw new HttpError(400, 'the request body must be a JSON object');
}

function send(res: ServerResponse, status: number, body: unknown): void {
  const text = `${JSON.stringify(body)}\n`;
  res.writeHead(status, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) });
  res.end(text);
}

/** Where image `name` of `caller` is: a token bound to a uid has a namespace of its own. */
function imageDir(dataDir: string, caller: Caller, name: unknown): string {
  if (typeof name !== 'string' || !IMAGE_NAME.test(name))
    throw new HttpError(400, `"image" must be a name matching ${IMAGE_NAME.source}`);
  return join(dataDir, 'images', ...(caller.uid === undefined ? [] : [`uid-${caller.uid}`]), name);
}

function processUid(pid: number): number {
  userProcessStat(pid); // a clear error for an unknown PID or a kernel thread
  return Number(/^Uid:\s+(\d+)/m.exec(readProcText(pid, 'status'))?.[1]);
}

/** Start an agent; resolves once it listens. */
export async function startAgent(options: AgentOptions): Promise<Agent> {
  checkListen(options.host, options.tls !== undefined, options.insecure === true);
  const dataDir = resolve(options.dataDir);
  mkdirSync(join(dataDir, 'images'), { recursive: true, mode: 0o700 });
  mkdirSync(join(dataDir, 'migrations'), { recursive: true, mode: 0o700 });
  // What a previous agent was receiving when it died is of no use to anyone.
  for (const left of readdirSync(join(dataDir, 'migrations')))
    rmSync(join(dataDir, 'migrations', left), { recursive: true, force: true });
  loadNativePackages();
  startWorkerThreads();
  const keyFile = options.imageKeyFile ?? join(dataDir, 'image.key');
  const imageKey = loadImageKey(keyFile);
  if (imageKey.made)
    options.onWarning?.(`made a new image key in ${keyFile}: images sealed with another are refused`);
  const idleMs = options.idleTimeoutMs ?? DEFAULT_IDLE_MS;
  const maxStreams = options.maxStreams ?? DEFAULT_MAX_STREAMS;
  const maxStreamsPerToken = options.maxStreamsPerToken ?? DEFAULT_MAX_STREAMS_PER_TOKEN;
  const cgroup = options.cgroup && openCgroup(options.cgroup.path, options.cgroup.cpus);
  // Every process it manages (run, restored, migrated in) goes into its cgroup, with its children.
  const registry = new Registry((p) => processTree(p.pid).forEach((pid) => cgroup?.add(pid)));
  const migrations = new Migrations(dataDir, registry, idleMs, options.onWarning);
  const jobs = new Jobs({
    registry,
    dataDir,
    cgroup,
    peerCa: options.peerCa,
    incoming: () =>
      migrations
        .list()
        .filter((m) => m.state === 'receiving' || m.state === 'restoring' || m.state === 'held').length,
    onWarning: options.onWarning,
    seal: (image) => sealImage(imageKey.key, image),
    onCheckpoint: (p, image) =>
      void member
        ?.claim(p, image)
        .catch((err: unknown) =>
          options.onWarning?.(`job ${p.job!.id}: its checkpoint is not in etcd: ${String(err)}`),
        ),
  });
  let self = '';
  let member: Member | undefined;
  const counters = { dumps: 0, restores: 0, requests: 0, refused: 0 };
  const started = Date.now();

  const status = (): Record<string, unknown> => ({
    host: hostname(),
    kernel: release(),
    ferry: FERRY_VERSION,
    uptimeSeconds: Math.round((Date.now() - started) / 1000),
    cpus: cpus().length,
    loadavg: loadavg(),
    memory: { totalBytes: totalmem(), freeBytes: freemem() },
    processes: registry.list().filter((p) => p.state !== 'exited').length,
    migrations: migrations.list().length,
  });

  const routes = async (req: IncomingMessage, res: ServerResponse, caller: Caller): Promise<void> => {
    const url = new URL(req.url ?? '/', 'http://agent');
    const path = url.pathname;
    const method = req.method ?? 'GET';
    const migration = /^\/v1\/migrations\/([^/]+)(\/commit)?$/.exec(path);
    const moveJob = /^\/v1\/jobs\/([^/]+)\/migrate$/.exec(path);
    const killJob = /^\/v1\/jobs\/([^/]+)\/kill$/.exec(path);
    if (method === 'POST' && (path === '/v1/drain' || path === '/v1/undrain')) {
      jobs.drain(caller, path === '/v1/drain');
      return send(res, 200, { drained: jobs.drained });
    }
    const measuredJob = /^\/v1\/jobs\/([^/]+)\/measured$/.exec(path);
    if (method === 'POST' && measuredJob) {
      const rate = (await readJson(req)).dirtyBytesPerSecond;
      if (typeof rate !== 'number' || !Number.isFinite(rate) || rate < 0)
        throw new HttpError(400, '"dirtyBytesPerSecond" must be a number of bytes');
      jobs.measured(decodeURIComponent(measuredJob[1]!), rate, caller);
      return send(res, 200, { ok: true });
    }
    if (method === 'POST' && killJob) {
      const p = jobs.kill(decodeURIComponent(killJob[1]!), caller);
      return send(res, 200, { id: p.job!.id, pid: p.pid, killed: true });
    }
    if (method === 'GET' && path === '/v1/load') return send(res, 200, jobs.load());
    const recoverJob = /^\/v1\/jobs\/([^/]+)\/recover$/.exec(path);
    if (method === 'POST' && recoverJob) {
      if (!member)
        throw new HttpError(
          400,
          'this agent is in no etcd cluster (--etcd): it has no checkpoints to recover',
        );
      if (caller.uid !== undefined && caller.uid !== 0)
        throw new FerryError(
          'FERRY_AUTH',
          'jobs run as root: recovering one takes a token not bound to a uid',
        );
      const p = await member.recover(decodeURIComponent(recoverJob[1]!));
      return send(res, 200, { id: p.job!.id, pid: p.pid, agent: self });
    }
    if (method === 'POST' && path === '/v1/jobs') {
      const p = jobs.run(parseRunRequest(await readJson(req)), caller);
      return send(res, 200, { id: p.job!.id, name: p.job!.name, pid: p.pid, agent: self });
    }
    if (method === 'POST' && moveJob) {
      const body = await readJson(req);
      if (typeof body.to !== 'string') throw new HttpError(400, '"to" must be the host:port of an agent');
      parseAddress(body.to); // a malformed one is the request's fault (400), not a failed move
      const mode = (body.mode ?? 'pre-copy') as MigrateMode;
      if (!MIGRATE_MODES.includes(mode)) throw new HttpError(400, `"mode" is ${MIGRATE_MODES.join(', ')}`);
      const entry = await jobs.migrate(
        decodeURIComponent(moveJob[1]!),
        {
          to: body.to,
          self: typeof body.from === 'string' ? body.from : self,
          reason: typeof body.reason === 'string' ? body.reason.slice(0, 1000) : 'asked',
          mode,
          maxDowntimeMs: typeof body.maxDowntimeMs === 'number' ? body.maxDowntimeMs : undefined,
        },
        caller,
      );
      // Answered whatever the outcome (moved, failed, exited, in-doubt): the entry says which.
      return send(res, 200, entry);
    }
    if (method === 'GET' && path === '/v1/status') return send(res, 200, status());
    if (method === 'GET' && path === '/v1/processes') {
      const mine = registry.list().filter((p) => caller.uid === undefined || p.uid === caller.uid);
      return send(res, 200, { processes: mine });
    }
    if (method === 'GET' && path === '/metrics') return sendMetrics(res);
    if (method === 'POST' && path === '/v1/dump') {
      const body = await readJson(req);
      const pid = body.pid;
      if (typeof pid !== 'number' || !Number.isInteger(pid) || pid <= 0)
        throw new HttpError(400, '"pid" must be a positive integer');
      authorize(caller, processUid(pid), `process ${pid}`);
      const dir = imageDir(dataDir, caller, body.image ?? `pid-${pid}`);
      const result = await dump(pid, {
        dir,
        leaveRunning: body.leaveRunning === true,
        compress: body.compress === true,
        vmas: typeof body.vmas === 'string' ? body.vmas : undefined,
      });
      sealImage(imageKey.key, dir);
      counters.dumps++;
      return send(res, 200, { ...result, image: basename(dir) });
    }
    if (method === 'POST' && path === '/v1/restore') {
      const body = await readJson(req);
      const dir = imageDir(dataDir, caller, body.image);
      if (!existsSync(dir)) throw new HttpError(404, `no image ${String(body.image)}`);
      // Only an image this agent wrote, and only with what the caller's uid may have.
      verifyImage(imageKey.key, dir, String(body.image));
      const image = await readImage(dir);
      checkLeastPrivilege(caller, image.manifest);
      const asUser = caller.uid !== undefined && caller.uid !== 0;
      const result = await restore(image, { tty: 'null', samePid: 'try', asUser });
      registry.add(restoredProcess(result, image.manifest.state));
      counters.restores++;
      return send(res, 200, result);
    }
    if (method === 'POST' && path === '/v1/migrations') {
      const id = req.headers['ferry-migration-id'];
      if (typeof id !== 'string' || !MIGRATION_ID.test(id))
        throw new HttpError(400, `the Ferry-Migration-Id header must match ${MIGRATION_ID.source}`);
      jobs.open('it takes no migration in');
      // A migration comes in once: a stream sent again under its id is turned away at the door.
      if (migrations.get(id)) throw new HttpError(409, `migration ${id} exists already`);
      const streaming = migrations.streaming(caller.tokenId);
      if (streaming.all >= maxStreams)
        throw new HttpError(
          429,
          `${streaming.all} migrations are coming in already, the most this agent takes`,
        );
      if (streaming.token >= maxStreamsPerToken)
        throw new HttpError(
          429,
          `${streaming.token} migrations of this token are coming in already, the most it may send`,
        );
      return migrations.receive(id, caller, req, res);
    }
    if (migration) {
      const m = migrations.get(migration[1]!);
      // Another uid's migration is none of this caller's business: as if there were none.
      if (!m || !migrations.owns(caller, m)) throw new HttpError(404, `no migration ${migration[1]}`);
      if (method === 'GET' && !migration[2]) return send(res, 200, m);
      if (method === 'POST' && migration[2]) return send(res, 200, migrations.commit(m.id));
    }
    throw new HttpError(404, `no route ${method} ${path}`);
  };

  const sendMetrics = (res: ServerResponse): void => {
    res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4' });
    res.end(metricsText({ registry, migrations, counters, status: status(), load: jobs.load() }));
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    counters.requests++;
    const fail = (status: number, code: string, message: string): void => {
      if (res.headersSent) {
        res.destroy();
        return;
      }
      send(res, status, { error: { code, message } });
    };
    // Answered to anyone: whether the agent is up (it says nothing else), and metrics if so set.
    const path = new URL(req.url ?? '/', 'http://agent').pathname;
    if (req.method === 'GET' && path === '/v1/health') {
      req.resume();
      return send(res, 200, { ok: true });
    }
    if (req.method === 'GET' && path === '/metrics' && options.metricsOpen) {
      req.resume();
      return sendMetrics(res);
    }
    if (member && !member.serving()) {
      req.resume();
      return fail(
        503,
        'FERRY_BUSY',
        'this agent is fencing (its etcd lease lapsed, or it is starting): try again',
      );
    }
    const caller = options.tokens ? authenticate(options.tokens, req.headers.authorization) : ANYONE;
    if (!caller) {
      counters.refused++;
      res.setHeader('www-authenticate', 'Bearer realm="ferry"');
      req.resume();
      return fail(401, 'FERRY_AUTH', 'a valid bearer token is required');
    }
    routes(req, res, caller).catch((err: unknown) => {
      if (err instanceof HttpError)
        return fail(err.status, LIMITS.has(err.status) ? 'FERRY_LIMIT' : 'FERRY_USAGE', err.message);
      if (isFerryError(err)) {
        if (err.code === 'FERRY_AUTH') counters.refused++;
        return fail(statusOf(err.code), err.code, err.message);
      }
      return fail(500, 'FERRY_INTERNAL', err instanceof Error ? err.message : String(err));
    });
  };

  const server: Server = options.tls
    ? createHttpsServer({ cert: options.tls.cert, key: options.tls.key }, handler)
    : createHttpServer(handler);
  server.requestTimeout = 0; // a migration stream takes as long as it takes; idleness is what counts
  server.headersTimeout = HEADERS_TIMEOUT_MS;
  // Idleness ends a connection (a stream whose source went silent): set server-wide, since a socket
  // that carried a request before (keep-alive) gets the server's timeout again for the next one.
  server.timeout = idleMs;
  await new Promise<void>((resolveListen, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new FerryError(
          'FERRY_USAGE',
          `cannot listen on ${options.host}:${options.port}: ${err.code ?? err.message}`,
        ),
      ),
    );
    server.listen(options.port, options.host, () => resolveListen());
  });
  const addr = server.address() as AddressInfo;
  const address = `${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}`;
  self = options.advertise ?? address;
  if (options.etcd) {
    member = new Member({
      store: options.etcd.store,
      self,
      ttlSeconds: options.etcd.ttlSeconds,
      registry,
      jobs,
      verify: (dir) => verifyImage(imageKey.key, dir, dir),
      onWarning: options.onWarning,
    });
    try {
      await member.start();
    } catch (err) {
      server.close();
      throw err;
    }
  }
  const pull =
    options.pull &&
    startBalancer({
      peers: [...options.pull.peers, self],
      token: options.pull.token,
      ca: options.peerCa,
      intervalMs: options.pull.intervalMs,
      receiver: self,
      onEvent: options.pull.onDecision ?? (() => {}),
    });
  return {
    address,
    close: async () => {
      await member?.close(); // its checkpointed jobs are handed over first
      return new Promise((done) => {
        void pull?.stop();
        jobs.close();
        cgroup?.close();
        migrations.close();
        registry.close();
        server.close(() => done());
        server.closeAllConnections();
      });
    },
  };
}
