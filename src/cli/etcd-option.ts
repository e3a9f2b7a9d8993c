// --etcd <url,...> [--lease-ttl <seconds>], of `ferry agent` and `ferry balancer`.
import { FerryError } from '../errors.js';
import type { ClusterStore } from '../cluster/etcd.js';

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
  const { ClusterStore, parseEtcd } = await import('../cluster/etcd.js');
  const store = new ClusterStore(parseEtcd(urls));
  try {
    await store.check();
  } catch (err) {
    store.close();
    throw err;
  }
  return { store, ttlSeconds };
}
