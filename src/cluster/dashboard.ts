// The balancer's web dashboard (`ferry balancer --http ADDR`, docs/BALANCING.md "Dashboard"): the
// hosts with their load over time, the jobs on each, migrations under way and past, drain and
// undrain buttons; pushed to the page as each look at the cluster ends (server-sent events). One
// page of HTML, CSS and JavaScript of its own (src/cluster/dashboard-page.ts), no library, nothing
// fetched from elsewhere. Behind the balancer's token: given once as ?token=, kept in a cookie
// (HttpOnly, SameSite=Strict: another site's page can neither read it nor post with it).
import { createHash, timingSafeEqual } from 'node:crypto';
import {
  createServer as createHttpServer,
  type IncomingMessage,
  type Server,
  type ServerResponse,
} from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { FerryError } from '../errors.js';
import { callAgent } from '../migrate/client.js';
import type { HistoryEntry, JobReport, LoadReport } from '../agent/jobs.js';
import type { DecisionEvent } from './balancer.js';
import { endpointOf } from './balancer.js';
import { drainHost } from './drain.js';
import { DASHBOARD_PAGE } from './dashboard-page.js';

export interface DashboardOptions {
  host: string;
  port: number;
  /** The balancer's token: the agents', and the dashboard's. Undefined: anyone who reaches it. */
  token: string | undefined;
  ca?: Buffer;
  tls?: { cert: Buffer; key: Buffer };
  /** Who this balancer is, and how it knows the cluster. */
  id: string;
  membership: 'peers' | 'etcd';
  /** One line for a person about an event. */
  describe: (e: DecisionEvent) => string;
}

/** What the page shows, as pushed to it. */
export interface DashboardState {
  at: number;
  balancer: { id: string; membership: 'peers' | 'etcd'; acting: boolean };
  hosts: {
    endpoint: string;
    reachable: boolean;
    error?: string;
    hostname?: string;
    capacity?: number;
    demand?: number;
    load?: number;
    cpuUse?: number;
    pressure?: number | null;
    memAvailableBytes?: number;
    memTotalBytes?: number;
    busy?: boolean;
    drained?: boolean;
    /** [ms since the epoch, load] of the last SERIES_MS. */
    series: [number, number][];
    jobs: Pick<JobReport, 'id' | 'name' | 'pid' | 'cpuSeconds' | 'cpuRate' | 'rssBytes' | 'ageMs' | 'hops'>[];
  }[];
  /** Moves under way (no outcome yet) and ended, newest first. */
  migrations: HistoryEntry[];
  /** The balancer's lines, newest first. */
  log: string[];
  drains: Record<
    string,
    { state: 'draining' | 'drained' | 'failed'; moved: number; left: string[]; error?: string }
  >;
}

export interface Dashboard {
  url: string;
  /** A look at the cluster has ended. */
  look(loads: Map<string, LoadReport | Error>, acting: boolean): void;
  event(e: DecisionEvent): void;
  close(): Promise<void>;
}

const SERIES_MS = 10 * 60_000;
const MIGRATIONS = 200;
const LOG = 100;
const HISTORY_EVERY_MS = 5_000;
const COOKIE = 'ferry_token';
const AGENT_TIMEOUT_MS = 10_000;

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

export async function startDashboard(o: DashboardOptions): Promise<Dashboard> {
  const series = new Map<string, [number, number][]>();
  let loads = new Map<string, LoadReport | Error>();
  let acting = false;
  const log: string[] = [];
  /** Moves seen: by the agents' histories, and this balancer's own decisions. */
  const moves = new Map<string, HistoryEntry>();
  const drains: DashboardState['drains'] = {};
  const clients = new Set<ServerResponse>();
  let historiesAt = 0;

  const keyOf = (e: HistoryEntry): string => `${e.job} ${e.from} ${e.to} ${e.at}`;
  /** A move as one entry: its decision, its outcome and the agent's record of it merge (started when first seen). */
  const remember = (e: HistoryEntry): void => {
    const same = [...moves].find(
      ([, m]) =>
        m.job === e.job &&
        m.from === e.from &&
        m.to === e.to &&
        ((m.outcome === 'moving' && e.at > m.at - 3000) || Math.abs(m.at - e.at) < 3000),
    );
    if (same) moves.delete(same[0]);
    const entry = same ? { ...e, at: Math.min(same[1].at, e.at) } : e;
    moves.set(keyOf(entry), entry);
    if (moves.size > MIGRATIONS) moves.delete(moves.keys().next().value!);
  };

  const state = (): DashboardState => ({
    at: Date.now(),
    balancer: { id: o.id, membership: o.membership, acting },
    hosts: [...loads].map(([endpoint, l]) =>
      l instanceof Error
        ? { endpoint, reachable: false, error: l.message, series: series.get(endpoint) ?? [], jobs: [] }
        : {
            endpoint,
            reachable: true,
            hostname: l.host.hostname,
            capacity: l.host.capacity,
            demand: l.host.demand,
            load: l.host.load,
            cpuUse: l.host.cpuUse,
            pressure: l.host.pressure,
            memAvailableBytes: l.host.memAvailableBytes,
            memTotalBytes: l.host.memTotalBytes,
            busy: l.host.busy,
            drained: l.host.drained,
            series: series.get(endpoint) ?? [],
            jobs: l.jobs.map(({ id, name, pid, cpuSeconds, cpuRate, rssBytes, ageMs, hops }) => ({
              id,
              name,
              pid,
              cpuSeconds,
              cpuRate,
              rssBytes,
              ageMs,
              hops,
            })),
          },
    ),
    migrations: [...moves.values()].sort((a, b) => b.at - a.at),
    log: [...log].reverse(),
    drains,
  });

  const push = (): void => {
    if (clients.size === 0) return;
    const text = `event: state\ndata: ${JSON.stringify(state())}\n\n`;
    for (const res of clients) res.write(text);
  };

  /** The agents' own records of their moves (the balancer that made them may have been another). */
  const fetchHistories = async (): Promise<void> => {
    historiesAt = Date.now();
    await Promise.all(
      [...loads.keys()].map(async (peer) => {
        const l = await callAgent<LoadReport>(
          endpointOf(peer, o.token, o.ca),
          'GET',
          '/v1/load',
          undefined,
          AGENT_TIMEOUT_MS,
        ).catch(() => undefined);
        for (const e of l?.history ?? []) remember(e);
      }),
    );
    push();
  };

  const authorized = (req: IncomingMessage): boolean => {
    if (o.token === undefined) return true;
    const bearer = /^Bearer (.+)$/.exec(req.headers.authorization ?? '')?.[1];
    const cookie = (req.headers.cookie ?? '')
      .split(';')
      .map((c) => c.trim().split('='))
      .find(([k]) => k === COOKIE)?.[1];
    const given = bearer ?? (cookie === undefined ? undefined : decodeURIComponent(cookie));
    return given !== undefined && timingSafeEqual(digest(given), digest(o.token));
  };

  const send = (res: ServerResponse, status: number, type: string, body: string): void => {
    res.writeHead(status, {
      'content-type': type,
      'content-length': Buffer.byteLength(body),
      'cache-control': 'no-store',
      'x-content-type-options': 'nosniff',
      'content-security-policy': "default-src 'self'; script-src 'unsafe-inline'; style-src 'unsafe-inline'",
    });
    res.end(body);
  };
  const json = (res: ServerResponse, status: number, body: unknown): void =>
    send(res, status, 'application/json', `${JSON.stringify(body)}\n`);

  const readHost = async (req: IncomingMessage): Promise<string> => {
    let text = '';
    for await (const chunk of req as AsyncIterable<Buffer>) {
      text += chunk.toString('utf8');
      if (text.length > 10_000) throw new FerryError('FERRY_USAGE', 'the request body is too long');
    }
    const host = (JSON.parse(text || '{}') as { host?: unknown }).host;
    if (typeof host !== 'string' || !loads.has(host))
      throw new FerryError(
        'FERRY_USAGE',
        `"host" must be one of the agents: ${[...loads.keys()].join(', ')}`,
      );
    return host;
  };

  const drain = (host: string): void => {
    drains[host] = { state: 'draining', moved: 0, left: [] };
    push();
    drainHost({
      host,
      peers: [...loads.keys()],
      token: o.token,
      ca: o.ca,
      onMove: (entry) => {
        remember(entry);
        if (entry.outcome === 'moved') drains[host]!.moved++;
        push();
      },
    })
      .then((r) => {
        drains[host] = {
          state: 'drained',
          moved: r.moved.length,
          left: r.left.map((j) => `${j.name}: ${j.why}`),
        };
      })
      .catch((err: unknown) => {
        drains[host] = {
          ...drains[host]!,
          state: 'failed',
          error: err instanceof Error ? err.message : String(err),
        };
      })
      .finally(push);
  };

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    const url = new URL(req.url ?? '/', 'http://dashboard');
    const given = url.searchParams.get('token');
    if (req.method === 'GET' && url.pathname === '/' && given !== null && o.token !== undefined) {
      req.resume();
      if (!timingSafeEqual(digest(given), digest(o.token)))
        return send(res, 401, 'text/plain', 'wrong token\n');
      // Into a cookie, and out of the address bar (and of the history).
      res.writeHead(303, {
        location: '/',
        'set-cookie': `${COOKIE}=${encodeURIComponent(given)}; HttpOnly; SameSite=Strict; Path=/${o.tls ? '; Secure' : ''}`,
      });
      return void res.end();
    }
    if (!authorized(req)) {
      req.resume();
      return send(
        res,
        401,
        'text/html; charset=utf-8',
        '<!doctype html><title>ferry</title><form method="get" action="/"><label>Token <input name="token" type="password" autofocus></label> <button>Open</button></form>\n',
      );
    }
    if (req.method === 'GET' && url.pathname === '/')
      return send(res, 200, 'text/html; charset=utf-8', DASHBOARD_PAGE);
    if (req.method === 'GET' && url.pathname === '/api/state') return json(res, 200, state());
    if (req.method === 'GET' && url.pathname === '/events') {
      res.writeHead(200, {
        'content-type': 'text/event-stream',
        'cache-control': 'no-store',
        connection: 'keep-alive',
      });
      res.write(`event: state\ndata: ${JSON.stringify(state())}\n\n`);
      clients.add(res);
      req.once('close', () => clients.delete(res));
      return;
    }
    const action = /^\/api\/(drain|undrain)$/.exec(url.pathname);
    if (req.method === 'POST' && action) {
      // A form post from another site carries no JSON content type without a CORS preflight.
      if (!(req.headers['content-type'] ?? '').startsWith('application/json')) {
        req.resume();
        return json(res, 415, { error: { code: 'FERRY_USAGE', message: 'send JSON' } });
      }
      void readHost(req)
        .then(async (host) => {
          if (action[1] === 'drain') {
            if (drains[host]?.state === 'draining')
              throw new FerryError('FERRY_BUSY', `${host} is being drained already`);
            drain(host);
          } else {
            await callAgent(endpointOf(host, o.token, o.ca), 'POST', '/v1/undrain', {}, AGENT_TIMEOUT_MS);
            delete drains[host];
            push();
          }
          json(res, 202, { host, [action[1]!]: true });
        })
        .catch((err: unknown) =>
          json(res, err instanceof FerryError && err.code === 'FERRY_BUSY' ? 409 : 400, {
            error: {
              code: err instanceof FerryError ? err.code : 'FERRY_USAGE',
              message: err instanceof Error ? err.message : String(err),
            },
          }),
        );
      return;
    }
    req.resume();
    json(res, 404, { error: { code: 'FERRY_USAGE', message: `no route ${req.method} ${url.pathname}` } });
  };

  const server: Server = o.tls
    ? createHttpsServer({ cert: o.tls.cert, key: o.tls.key }, handler)
    : createHttpServer(handler);
  await new Promise<void>((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) =>
      reject(
        new FerryError('FERRY_USAGE', `cannot listen on ${o.host}:${o.port}: ${err.code ?? err.message}`),
      ),
    );
    server.listen(o.port, o.host, () => resolve());
  });
  const addr = server.address() as AddressInfo;
  const url = `${o.tls ? 'https' : 'http'}://${addr.family === 'IPv6' ? `[${addr.address}]` : addr.address}:${addr.port}/`;

  return {
    url,
    look(next, nowActing) {
      loads = next;
      acting = nowActing;
      const now = Date.now();
      for (const [peer, l] of next) {
        const points = series.get(peer) ?? [];
        if (!(l instanceof Error)) points.push([now, l.host.load]);
        while (points.length > 0 && points[0]![0] < now - SERIES_MS) points.shift();
        series.set(peer, points);
      }
      if (now - historiesAt >= HISTORY_EVERY_MS) void fetchHistories();
      push();
    },
    event(e) {
      log.push(o.describe(e));
      if (log.length > LOG) log.shift();
      if (e.event === 'decision' && !e.dryRun)
        remember({
          at: e.at,
          job: e.decision.job,
          name: e.decision.name,
          from: e.decision.from,
          to: e.decision.to,
          reason: e.decision.reason,
          outcome: 'moving',
        });
      if (e.event === 'outcome') {
        const { event: _event, adopted: _adopted, ...entry } = e;
        remember(entry);
      }
      push();
    },
    close: () =>
      new Promise((resolve) => {
        for (const res of clients) res.end();
        server.close(() => resolve());
        server.closeAllConnections();
      }),
  };
}
