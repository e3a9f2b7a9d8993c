// The balancer loop (`ferry balancer`, and an agent's --pull-from): look at every agent's load, let
// the policy decide, and ask each chosen job's agent to move it. The move is the agent's to carry
// out: a balancer that dies mid-migration leaves it to finish there, and one that starts again sees
// the hosts still busy. Static peers are the membership here (one interface: `peers`).
import { FerryError } from '../errors.js';
import { callAgent, parseAddress, type AgentEndpoint } from '../migrate/client.js';
import type { HistoryEntry, LoadReport } from '../agent/jobs.js';
import { decide, type Decision, type HostView, type PolicyParams } from './policy.js';

export interface BalancerOptions {
  /** host:port of every agent. */
  peers: string[];
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
}

export type DecisionEvent =
  | { event: 'decision'; at: number; dryRun: boolean; decision: Decision }
  | ({ event: 'outcome'; at: number } & HistoryEntry)
  | { event: 'unreachable'; at: number; peer: string; error: string }
  | { event: 'reachable'; at: number; peer: string };

export interface Balancer {
  stop(): void;
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

export function startBalancer(o: BalancerOptions): Balancer {
  for (const peer of o.peers) parseAddress(peer); // a malformed one is said now, not at the first look
  if (o.peers.length < 2)
    throw new FerryError('FERRY_USAGE', 'balancing needs two agents or more: --peers a:port,b:port');
  const inFlight = new Set<string>();
  const unreachable = new Set<string>();
  let bandwidth: number | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;

  const move = async (d: Decision): Promise<void> => {
    inFlight.add(d.from);
    inFlight.add(d.to);
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
    } finally {
      inFlight.delete(d.from);
      inFlight.delete(d.to);
    }
  };

  const look = async (): Promise<void> => {
    const loads = await gatherLoads(o.peers, o.token, o.ca);
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
    if (stopped) return;
    for (const decision of decide(hosts, { receiver: o.receiver, params: o.params }, bandwidth)) {
      o.onEvent({ event: 'decision', at: Date.now(), dryRun: o.dryRun === true, decision });
      if (!o.dryRun) void move(decision);
    }
  };

  const loop = (): void => {
    if (stopped) return;
    look()
      .catch((err: unknown) =>
        o.onEvent({
          event: 'unreachable',
          at: Date.now(),
          peer: '*',
          error: err instanceof Error ? err.message : String(err),
        }),
      )
      .finally(() => {
        if (!stopped) timer = setTimeout(loop, o.intervalMs ?? DEFAULT_INTERVAL_MS);
      });
  };
  loop();
  return {
    stop: () => {
      stopped = true;
      clearTimeout(timer);
    },
    bandwidth: () => bandwidth,
  };
}
