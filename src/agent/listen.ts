// Where a server of ferry's may listen (the agent, the balancer's dashboard): plain HTTP only on
// loopback, unless asked by name; TLS from --tls-cert and --tls-key.
import { readFileSync } from 'node:fs';
import { isIP } from 'node:net';
import { FerryError } from '../errors.js';

/** Refuse plain HTTP on an address other than loopback unless `insecure`. */
export function checkListen(host: string, tls: boolean, insecure: boolean): void {
  if (!tls && !isLoopback(host) && !insecure)
    throw new FerryError(
      'FERRY_USAGE',
      `${host} is not a loopback address: serve TLS there (--tls-cert and --tls-key), or plain HTTP by name (--insecure)`,
    );
}

/** Read --tls-cert/--tls-key files. */
export function readTls(cert: string, key: string): { cert: Buffer; key: Buffer } {
  try {
    return { cert: readFileSync(cert), key: readFileSync(key) };
  } catch (err) {
    throw new FerryError('FERRY_USAGE', `cannot read the TLS certificate or key: ${String(err)}`);
  }
}

/** 127.0.0.0/8, ::1, localhost: where plain HTTP stays on this host. */
function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  if (isIP(host) === 4) return host.startsWith('127.');
  return host === '::1';
}
