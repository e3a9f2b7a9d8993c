// The balancer loop (`ferry balancer`, and an agent's --pull-from): look at every agent's load, let
// the policy decide, and ask each chosen job's agent to move it. The move is the agent's to carry
// out: a balancer that dies mid-migration leaves it to finish there, and one that starts again sees
// the hosts still busy. The membership is a static list of peers, or etcd (src/cluster/etcd.ts):
// there several balancers campaign and only the leader acts; each move is an intent in etcd before
// it starts, which a new leader sees through to its end; and the leader restores the checkpointed
// jobs of a host whose lease expired on the hosts still alive.
import { FerryError } from '../errors.js';
import { callAgent, parseAddress, type AgentEndpoint } from '../migrate/client.js';
import type { HistoryEntry, LoadReport } from '../agent/jobs.js';
import type { ClusterStore, Intent } from './etcd.js';
import { decide, placeJob, type Decision, type HostView, type PolicyParams } from './policy.js';

export interface BalancerOptions {
  /** host:port of every agent (static membership), or: */
  peers?: string[];
  /** etcd's: the agents registered there; this balancer acts only while it leads (as `id`). */
  etcd?: { store: ClusterStore; id: string; ttlSeconds: number };
  token: string | undefined;
  ca?: Buffer;
  /** Between two looks (default 2000 ms). */
  intervalMs?: number;
  /** Receiver-initiated: only this agent takes jobs (it asks for work). */
  receiver?: string;
  /** Say what would be done, do nothing. */
  dryRun?: boolean;
  params?: Partial<PolicyParams>;
  onEvent: (event: DecisionEvent) => void;
  /** Hears every look at the cluster: each agent's load (or why it gave none), and whether this one acts. */
  onLook?: (loads: Map<string, LoadReport | Error>, acting: boolean) => void;
}

export type DecisionEvent =
  | { event: 'decision'; at: number; dryRun: boolean; decision: Decision }
  /** A move's end; `adopted`: a move an earlier leader began, seen through by this one. */
  | ({ event: 'outcome'; at: number; adopted?: boolean } & HistoryEntry)
  | { event: 'unreachable'; at: number; peer: string; error: string }
  | { event: 'reachable'; at: number; peer: string }
  | { event: 'campaigning'; at: number; id: string }
  | { event: 'elected'; at: number; id: string }
  | { event: 'deposed'; at: number; id: string; why: string }
  /** A job of a dead host restored from its checkpoint (or not). */
  | {
      event: 'recovery';
      at: number;
      job: string;
      name: string;
      from: string;
      to: string;
      outcome: 'recovered' | 'failed';
      checkpointAt?: number;
      pid?: number;
      error?: string;
    }
  /** A dead host's job that had no checkpoint: gone with its host. */
  | { event: 'lost'; at: number; job: string; name: string; host: string };

export interface Balancer {
  /** Stop looking; with etcd, give up the leadership (a standby takes over at once). */
  stop(): Promise<void>;
  /** Links bandwidth learned from the migrations so far (bytes/s), if any. */
  bandwidth(): number | undefined;
}

const LOAD_TIMEOUT_MS = 5_000;
/** A move's answer comes when it has ended: allow for a large one. */
const MOVE_TIMEOUT_MS = 30 * 60_000;
const DEFAULT_INTERVAL_MS = 2_000;

export const endpointOf = (peer: string, token: string | undefined, ca?: Buffer): AgentEndpoint => ({
  ...parseAddress(peer),
  token,
  ca,
});

/** Every peer's load report, or the error that kept it. */
export async function gatherLoads(
  peers: readonly string[],
  token: string | undefined,
  ca?: Buffer,
): Promise<Map<string, LoadReport | Error>> {
  const answers = await Promise.all(
    peers.map((peer) =>
      callAgent<LoadReport>(endpointOf(peer, token, ca), 'GET', '/v1/load', undefined, LOAD_TIMEOUT_MS).catch(
        (err: unknown) => (err instanceof Error ? err : new Error(String(err))),
      ),
    ),
  );
  return new Map(peers.map((p, i) => [p, answers[i]!]));
}

/** The policy's view of an agent's report. */
export function hostView(peer: string, load: LoadReport, busy: boolean): HostView {
  return {
    id: peer,
    capacity: load.host.capacity,
    otherDemand: 0,
    memAvailableBytes: load.host.memAvailableBytes,
    busy: busy || load.host.busy,
    closed: load.host.drained,
    jobs: load.jobs.map((j) => ({
      id: j.id,
      name: j.name,
      demand: j.demand,
      cpuSeconds: j.cpuSeconds,
      rssBytes: j.rssBytes,
      dirtyBytesPerSecond: j.dirtyBytesPerSecond,
      sinceMoveMs: j.sinceMoveMs,
      pinned: j.pinned,
    })),
  };
}

/** A move an earlier leader began is this old before, with no trace at its source, it counts as never begun. */
const UNSTARTED_MS = 10_000;
/** A restore an earlier leader asked for is this long at most before this one asks again. */
const RECOVER_GRACE_MS = 60_000;
/** After a failed restore, the next try of that job waits this long, doubled each time, up to the most. */
const RECOVER_BACKOFF_MS = 5_000;
const RECOVER_BACKOFF_MAX_MS = 5 * 60_000;

export function startBalancer(o: BalancerOptions): Balancer {
  const peers = o.peers ?? [];
  for (const peer of peers) parseAddress(peer); // a malformed one is said now, not at the first look
  if (!o.etcd && peers.length < 2)
    throw new FerryError(
      'FERRY_USAGE',
      'balancing needs two agents or more: --peers a:port,b:port (or --etcd)',
    );
  const inFlight = new Set<string>();
  /** Jobs this balancer is moving or restoring now. */
  const mine = new Set<string>();
  const unreachable = new Set<string>();
  const lost = new Set<string>();
  /** Restores that failed, per job: how many times, and not before when again. */
  const failed = new Map<string, { tries: number; retryAt: number }>();
  let bandwidth: number | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  const etcd = o.etcd;
  if (etcd) o.onEvent({ event: 'campaigning', at: Date.now(), id: etcd.id });
  const leadership =
    etcd &&
    etcd.store.campaign(
      etcd.id,
      etcd.ttlSeconds,
      () => {
        o.onEvent({ event: 'elected', at: Date.now(), id: etcd.id });
        // Act at once, not at the next look.
        clearTimeout(timer);
        if (!looking) loop();
      },
      (why) => o.onEvent({ event: 'deposed', at: Date.now(), id: etcd.id, why }),
    );
  const leading = (): boolean => !leadership || leadership.leading();

  /**
   * Run `work` under `intent`: its job and hosts are this balancer's meanwhile (from this call on,
   * before anything is awaited); with etcd, the intent is written first and deleted after. False
   * if another leader or another move holds the job.
   */
  const underIntent = async (
    intent: Omit<Intent, 'leader' | 'at'>,
    work: () => Promise<void>,
  ): Promise<boolean> => {
    mine.add(intent.job);
    inFlight.add(intent.from);
    inFlight.add(intent.to);
    try {
      if (etcd && !(await etcd.store.begin({ ...intent, leader: etcd.id, at: Date.now() }))) return false;
      try {
        await work();
      } finally {
        await etcd?.store.end(intent.job).catch(() => undefined);
      }
      return true;
    } finally {
      mine.delete(intent.job);
      inFlight.delete(intent.from);
      inFlight.delete(intent.to);
    }
  };

  const move = async (d: Decision): Promise<void> => {
    const intent = {
      kind: 'move' as const,
      job: d.job,
      name: d.name,
      from: d.from,
      to: d.to,
      reason: d.reason,
    };
    await underIntent(intent, async () => {
      o.onEvent({ event: 'decision', at: Date.now(), dryRun: false, decision: d });
      try {
        const entry = await callAgent<HistoryEntry>(
          endpointOf(d.from, o.token, o.ca),
          'POST',
          `/v1/jobs/${encodeURIComponent(d.job)}/migrate`,
          { to: d.to, from: d.from, reason: d.reason, mode: d.prediction.mode },
          MOVE_TIMEOUT_MS,
        );
        if (entry.outcome === 'moved' && entry.bytes && entry.totalMs) {
          const measured = entry.bytes / (entry.totalMs / 1000);
          bandwidth = bandwidth === undefined ? measured : (bandwidth + measured) / 2;
        }
        o.onEvent({ ...entry, event: 'outcome', at: Date.now() });
      } catch (err) {
        // The agent may still be moving it (the answer was lost): its history says how it ended.
        o.onEvent({
          event: 'outcome',
          at: Date.now(),
          job: d.job,
          name: d.name,
          from: d.from,
          to: d.to,
          reason: d.reason,
          outcome: 'failed',
          error: err instanceof Error ? err.message : String(err),
        });
      }
    }).catch(() => false);
  };

  /** Restore job `id`, whose host died, on the live host where it adds least load. */
  const recover = async (
    id: string,
    name: string,
    from: string,
    hosts: HostView[],
    checkpointAt?: number,
  ): Promise<void> => {
    const to = placeJob(hosts, 0);
    if (!to) return; // no open host: tried again at the next look
    await underIntent(
      { kind: 'recover', job: id, name, from, to: to.id, reason: `${from || 'its host'} died` },
      async () => {
        const said = { event: 'recovery', job: id, name, from, to: to.id } as const;
        try {
          const got = await callAgent<{ pid: number }>(
            endpointOf(to.id, o.token, o.ca),
            'POST',
            `/v1/jobs/${encodeURIComponent(id)}/recover`,
            {},
            MOVE_TIMEOUT_MS,
          );
          o.onEvent({ ...said, at: Date.now(), outcome: 'recovered', pid: got.pid, checkpointAt });
          failed.delete(id);
        } catch (err) {
          // Tried again later, and later each time: a restore that cannot work is not tried every look.
          const tries = (failed.get(id)?.tries ?? 0) + 1;
          failed.set(id, {
            tries,
            retryAt: Date.now() + Math.min(RECOVER_BACKOFF_MS * 2 ** (tries - 1), RECOVER_BACKOFF_MAX_MS),
          });
          o.onEvent({
            ...said,
            at: Date.now(),
            outcome: 'failed',
            error: err instanceof Error ? err.message : String(err),
          });
        }
      },
    ).catch(() => undefined);
  };

  /** See an intent an earlier leader left through: wait for its move to end, then clear it. */
  const settle = async (intent: Intent, loads: Map<string, LoadReport | Error>): Promise<boolean> => {
    // (`loads` holds every registered agent's report, its history of moves with it.)
    const store = etcd!.store;
    const runsAt = [...loads].filter(
      ([, l]) => !(l instanceof Error) && l.jobs.some((j) => j.id === intent.job),
    );
    if (intent.kind === 'recover') {
      // Restored (it runs), or given up on: restored again from its checkpoint by this leader.
      if (runsAt.length === 0 && Date.now() - intent.at < RECOVER_GRACE_MS) return false;
      await store.end(intent.job);
      return true;
    }
    const from = loads.get(intent.from);
    const source = from instanceof Error ? undefined : from;
    const entry = source?.history
      .filter((e) => e.job === intent.job && e.at >= intent.at - UNSTARTED_MS)
      .at(-1);
    if (entry?.outcome === 'moving') return false;
    if (entry) o.onEvent({ ...entry, event: 'outcome', at: Date.now(), adopted: true });
    else if (source && Date.now() - intent.at < UNSTARTED_MS)
      return false; // its request may be on its way
    else if (from instanceof Error && runsAt.length === 0) return false; // the source is registered but silent
    await store.end(intent.job);
    return true;
  };

  const look = async (): Promise<void> => {
    // With etcd, the members are the agents registered there; each is asked for its load as it is
    // now (what it publishes there is up to a second old).
    const members = etcd ? (await etcd.store.hosts()).map((h) => h.endpoint).sort() : peers;
    const loads = await gatherLoads(members, o.token, o.ca);
    const acting = leading() && !stopped;
    o.onLook?.(loads, acting);
    const hosts: HostView[] = [];
    for (const [peer, load] of loads) {
      if (load instanceof Error) {
        if (!unreachable.has(peer))
          o.onEvent({ event: 'unreachable', at: Date.now(), peer, error: load.message });
        unreachable.add(peer);
        continue;
      }
      if (unreachable.delete(peer)) o.onEvent({ event: 'reachable', at: Date.now(), peer });
      hosts.push(hostView(peer, load, inFlight.has(peer)));
    }
    if (!acting) return;
    if (etcd) {
      // Moves an earlier leader began: their hosts are busy, their jobs not to be moved again.
      const held = new Set<string>();
      for (const intent of await etcd.store.intents()) {
        if (mine.has(intent.job)) continue;
        if (!(await settle(intent, loads))) {
          held.add(intent.from).add(intent.to).add(intent.job);
        }
      }
      for (const h of hosts) {
        h.busy ||= held.has(h.id);
        h.jobs = h.jobs.filter((j) => !held.has(j.id) && !mine.has(j.id));
      }
      // The checkpointed jobs of hosts whose lease expired.
      const open = hosts.filter((h) => !h.closed);
      for (const r of await etcd.store.jobs()) {
        if (loads.has(r.host) || mine.has(r.id) || held.has(r.id)) continue;
        if (!r.checkpoint) {
          if (!lost.has(r.id))
            o.onEvent({ event: 'lost', at: Date.now(), job: r.id, name: r.name, host: r.host });
          lost.add(r.id);
          continue;
        }
        if ((failed.get(r.id)?.retryAt ?? 0) > Date.now()) continue;
        if (!o.dryRun) void recover(r.id, r.name, r.host, open, r.checkpointAt);
      }
    }
    for (const decision of decide(hosts, { receiver: o.receiver, params: o.params }, bandwidth)) {
      if (o.dryRun) o.onEvent({ event: 'decision', at: Date.now(), dryRun: true, decision });
      else void move(decision);
    }
  };

  let looking = false;
  const loop = (): void => {
    if (stopped) return;
    looking = true;
    look()
      .catch((err: unknown) =>
        o.onEvent({
          event: 'unreachable',
          at: Date.now(),
          peer: etcd ? 'etcd' : '*',
          error: err instanceof Error ? err.message : String(err),
        }),
      )
      .finally(() => {
        looking = false;
        if (!stopped) timer = setTimeout(loop, o.intervalMs ?? DEFAULT_INTERVAL_MS);
      });
  };
  loop();
  return {
    stop: async () => {
      stopped = true;
      clearTimeout(timer);
      await leadership?.stop();
    },
    bandwidth: () => bandwidth,
  };
}
