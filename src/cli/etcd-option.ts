// --etcd <url,...> [--lease-ttl <seconds>], of `ferry agent` and `ferry balancer`.
import { FerryError } from '../errors.js';
import type { ClusterStore } from '../cluster/etcd.js';
import { parsePeers } from './balancer-command.js';
import { parseList } from './command.js';

/** A host's lease: it is given up for dead this long after its agent last renewed it. */
export const DEFAULT_HOST_TTL_S = 10;

/** --etcd URLS [--lease-ttl S]: a connection to etcd (checked), or undefined without --etcd. */
export async function joinEtcd(
  urls: unknown,
  ttl: unknown,
  defaultTtl: number,
): Promise<{ store: ClusterStore; ttlSeconds: number } | undefined> {
  if (urls === undefined) {
    if (ttl !== undefined) throw new FerryError('FERRY_USAGE', '--lease-ttl goes with --etcd');
    return undefined;
  }
  const ttlSeconds = ttl === undefined ? defaultTtl : Number(ttl);
  if (!Number.isInteger(ttlSeconds) || ttlSeconds < 2 || ttlSeconds > 3600)
    throw new FerryError('FERRY_USAGE', '--lease-ttl takes a whole number of seconds, 2 to 3600');
  // Loaded only when asked for: etcd's client (gRPC) is large.
  const { ClusterStore } = await import('../cluster/etcd.js');
  const store = new ClusterStore(parseList(urls, 'give etcd: --etcd http://host:port[,http://host:port...]'));
  try {
    await store.check();
  } catch (err) {
    store.close();
    throw err;
  }
  return { store, ttlSeconds };
}

/** The agents of a cluster, as --peers lists them or etcd has them registered (`--etcd`). */
export interface Members {
  list(): Promise<string[]>;
  /** With --etcd: the store, for what else it holds. */
  store?: ClusterStore;
  close(): void;
}

/** --peers a:1,b:2 or --etcd URLS (one of them): where the cluster's agents are. */
export async function clusterMembers(values: Record<string, unknown>): Promise<Members> {
  if ((values.peers === undefined) === (values.etcd === undefined))
    throw new FerryError(
      'FERRY_USAGE',
      'give the agents (--peers a:port,b:port) or etcd (--etcd http://host:port), one of them',
    );
  if (values.etcd === undefined) {
    const peers = parsePeers(values.peers);
    return { list: () => Promise.resolve(peers), close: () => {} };
  }
  const { store } = (await joinEtcd(values.etcd, undefined, DEFAULT_HOST_TTL_S))!;
  return {
    list: async () => (await store.hosts()).map((h) => h.endpoint).sort(),
    store,
    close: () => store.close(),
  };
}
