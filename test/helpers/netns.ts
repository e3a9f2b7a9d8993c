// Hosts for migration tests: network namespaces joined by a bridge in a namespace of its own, each
// with one veth (eth0) and an address on 10.213.<n>.0/24; the test process joins the bridge too, so
// it can reach every agent. Removed again after the tests, whatever happened.
import { execFileSync } from 'node:child_process';

export interface Host {
  ns: string;
  addr: string;
  /** The switch's end of this host's veth (link it down to cut the host off). */
  port: string;
  /** Prefix that runs a command inside the host's namespace. */
  exec: string[];
}

const ip = (...args: string[]): void =>
  void execFileSync('ip', args, { stdio: ['ignore', 'ignore', 'pipe'] });

/** Make `count` hosts; `cleanup` gets the step that removes them. */
export function makeHosts(count: number, cleanup: (step: () => void) => void): Host[] {
  const tag = `f${process.pid}`;
  const subnet = `10.213.${process.pid % 250}`;
  const sw = `${tag}-sw`;
  const namespaces = [sw];
  const rootPort = `${tag}-r`;
  cleanup(() => {
    for (const ns of namespaces) execFileSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
    try {
      ip('link', 'del', rootPort);
    } catch {
      // went with the switch's namespace
    }
  });
  ip('netns', 'add', sw);
  ip('-n', sw, 'link', 'add', 'br0', 'type', 'bridge');
  ip('-n', sw, 'link', 'set', 'br0', 'up');
  const join = (port: string, where: string[], dev: string, addr: string): void => {
    ip('link', 'add', dev, ...where, 'type', 'veth', 'peer', 'name', port, 'netns', sw);
    ip('-n', sw, 'link', 'set', port, 'master', 'br0', 'up');
    const inNs = where.length > 0 ? ['-n', where[1]!] : [];
    ip(...inNs, 'addr', 'add', `${addr}/24`, 'dev', dev);
    ip(...inNs, 'link', 'set', dev, 'up');
  };
  join('root', [], rootPort, `${subnet}.254`);
  return Array.from({ length: count }, (_, i) => {
    const ns = `${tag}-h${i}`;
    ip('netns', 'add', ns);
    namespaces.push(ns);
    ip('-n', ns, 'link', 'set', 'lo', 'up');
    const port = `p${i}`;
    const addr = `${subnet}.${i + 1}`;
    join(port, ['netns', ns], 'eth0', addr);
    return { ns, addr, port, exec: ['ip', 'netns', 'exec', ns] };
  });
}

/** Cut a host off (its switch port down), or join it again. */
export function setLink(host: Host, up: boolean): void {
  ip('-n', `f${process.pid}-sw`, 'link', 'set', host.port, up ? 'up' : 'down');
}

/** Limit what reaches `host` to `rate` (tc tbf on its switch port); undefined lifts the limit. */
export function limitRate(host: Host, rate: string | undefined): void {
  const dev = ['dev', host.port];
  const sw = `f${process.pid}-sw`;
  if (rate === undefined) ip('netns', 'exec', sw, 'tc', 'qdisc', 'del', ...dev, 'root');
  else
    ip(
      'netns',
      'exec',
      sw,
      'tc',
      'qdisc',
      'add',
      ...dev,
      'root',
      'tbf',
      'rate',
      rate,
      'burst',
      '64kb',
      'latency',
      '400ms',
    );
}
