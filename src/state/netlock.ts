// The network lock of a dump that takes established TCP connections along: while the process is
// down (from the moment its sockets are read in repair mode until its restore has them again), a
// packet of one of those connections would reach no socket and be answered with a reset, which
// ends the connection. An nftables table of ferry's drops them in both directions (as CRIU's
// --network-lock nftables does); the peer retransmits once it is gone. The dump that made it
// deletes it if the process runs on (a failed dump, --leave-running); otherwise the image names it
// and the restore deletes it once its connections are back.
import { execFileSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { FerryError } from '../errors.js';
import { sockaddrHost } from '../sys/socket.js';

function nft(args: readonly string[]): void {
  execFileSync('nft', args, { stdio: ['ignore', 'ignore', 'pipe'] });
}

/** Whether nft (nftables) can be run here. */
export function checkNft(): void {
  try {
    execFileSync('nft', ['list', 'tables'], { stdio: 'ignore' });
  } catch (err) {
    throw new FerryError(
      'FERRY_UNSUPPORTED',
      `--tcp-established needs nft (nftables) to hold its connections' packets while the process is down: ${(err as Error).message}`,
    );
  }
}

export class NetworkLock {
  /** The nftables table (family inet) that holds the packets. */
  readonly table = `ferry-lock-${randomBytes(6).toString('hex')}`;
  private made = false;

  /** Whether it holds anything (a table exists). */
  get holding(): boolean {
    return this.made;
  }

  /** Drop the packets of the connection between `local` and `peer` (raw sockaddrs), both ways. */
  hold(local: Buffer, peer: Buffer): void {
    if (!this.made) {
      nft(['add', 'table', 'inet', this.table]);
      this.made = true;
      for (const hook of ['input', 'output'])
        nft(['add', 'chain', 'inet', this.table, hook, `{ type filter hook ${hook} priority -300; }`]);
    }
    const a = sockaddrHost(local);
    const b = sockaddrHost(peer);
    const rule = (from: typeof a, to: typeof a): string[] =>
      [
        from.family,
        'saddr',
        from.host,
        to.family,
        'daddr',
        to.host,
        'tcp',
        'sport',
        String(from.port),
      ].concat(['tcp', 'dport', String(to.port), 'drop']);
    nft(['add', 'rule', 'inet', this.table, 'input', ...rule(b, a)]);
    nft(['add', 'rule', 'inet', this.table, 'output', ...rule(a, b)]);
  }

  /** Let the packets through again. */
  release(): void {
    if (!this.made) return;
    releaseLock(this.table);
    this.made = false;
  }
}

/** Delete lock table `table` if it is there; false if it is and could not be. */
export function releaseLock(table: string): boolean {
  try {
    nft(['list', 'table', 'inet', table]);
  } catch {
    return true; // lifted already (an earlier restore of the image)
  }
  try {
    nft(['delete', 'table', 'inet', table]);
    return true;
  } catch {
    return false;
  }
}
