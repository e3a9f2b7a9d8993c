// ferry agent --listen <addr:port> --data-dir <dir> (--token-file <f> | --no-auth) [--tls-cert <f> --tls-key <f> | --insecure]
//   [--image-key <f>] [--metrics-open] [--max-streams <n>] [--max-streams-per-token <n>] [--idle-timeout <ms>]
//   [--cgroup <path> [--cpus <n>]] [--advertise <host:port>] [--tls-ca <f>] [--pull-from <host:port,...>]
//   [--etcd <url,...> [--lease-ttl <seconds>]] [--json]
import { startAgent } from '../agent/agent.js';
import { readTls } from '../agent/listen.js';
import { readTokenFile, tokenFileWarning } from '../agent/auth.js';
import { FerryError } from '../errors.js';
import { parseAddress } from '../migrate/client.js';
import { agentToken, parseMs, printJson, readCa, warnOnStderr, type Command } from './command.js';
import { describeEvent, parsePeers } from './balancer-command.js';
import { DEFAULT_HOST_TTL_S, joinEtcd } from './etcd-option.js';

export const agentCommand: Command = {
  name: 'agent',
  summary:
    "run this host's agent: the HTTP API for dumps, restores, incoming migrations and jobs; --etcd joins a cluster",
  usage:
    'ferry agent --listen <addr:port> --data-dir <dir> (--token-file <f> | --no-auth) [--tls-cert <f> --tls-key <f> | --insecure]\n' +
    '       [--image-key <f>] [--metrics-open] [--max-streams <n>] [--max-streams-per-token <n>] [--idle-timeout <ms>]\n' +
    '       [--cgroup <path> [--cpus <n>]] [--advertise <host:port>] [--tls-ca <f>] [--pull-from <host:port,...>]\n' +
    '       [--etcd <url,...> [--lease-ttl <seconds>]] [--json]',
  options: {
    listen: { type: 'string' },
    'data-dir': { type: 'string' },
    'token-file': { type: 'string' },
    'no-auth': { type: 'boolean' },
    'tls-cert': { type: 'string' },
    'tls-key': { type: 'string' },
    insecure: { type: 'boolean' },
    'image-key': { type: 'string' },
    'metrics-open': { type: 'boolean' },
    'max-streams': { type: 'string' },
    'max-streams-per-token': { type: 'string' },
    'idle-timeout': { type: 'string' },
    cgroup: { type: 'string' },
    cpus: { type: 'string' },
    advertise: { type: 'string' },
    'tls-ca': { type: 'string' },
    'pull-from': { type: 'string' },
    etcd: { type: 'string' },
    'lease-ttl': { type: 'string' },
  },
  positionals: { min: 0, max: 0 },
  async run({ values }) {
    if (typeof values.listen !== 'string')
      throw new FerryError('FERRY_USAGE', 'give the address to listen on: --listen <addr:port>');
    if (typeof values['data-dir'] !== 'string')
      throw new FerryError('FERRY_USAGE', 'give a data directory: --data-dir <dir>');
    const tokenFile = values['token-file'];
    if (typeof tokenFile !== 'string' && values['no-auth'] !== true)
      throw new FerryError(
        'FERRY_USAGE',
        'give --token-file <f>, or --no-auth to let anyone who reaches the agent use it',
      );
    const cert = values['tls-cert'];
    const key = values['tls-key'];
    if ((typeof cert === 'string') !== (typeof key === 'string'))
      throw new FerryError('FERRY_USAGE', '--tls-cert and --tls-key go together');
    const { host, port } = parseAddress(values.listen);
    const tls = typeof cert === 'string' && typeof key === 'string';
    if (values['no-auth'] === true)
      warnOnStderr(
        `--no-auth: anyone who reaches ${values.listen} may read any process's memory and run code as root`,
      );
    if (typeof tokenFile === 'string') {
      const unsafe = tokenFileWarning(tokenFile);
      if (unsafe) warnOnStderr(unsafe);
    }
    const cpus = values.cpus === undefined ? undefined : Number(values.cpus);
    if (cpus !== undefined && (!(cpus > 0) || cpus > 4096))
      throw new FerryError('FERRY_USAGE', '--cpus takes a number of cores above 0, e.g. 0.5');
    if (cpus !== undefined && typeof values.cgroup !== 'string')
      throw new FerryError('FERRY_USAGE', '--cpus sets the quota of a cgroup: give it with --cgroup <path>');
    if (typeof values.advertise === 'string') parseAddress(values.advertise);
    const json = values.json === true;
    const etcd = await joinEtcd(values.etcd, values['lease-ttl'], DEFAULT_HOST_TTL_S);
    const agent = await startAgent({
      host,
      port,
      dataDir: values['data-dir'],
      tokens: typeof tokenFile === 'string' ? readTokenFile(tokenFile) : undefined,
      tls: tls ? readTls(cert, key) : undefined,
      insecure: values.insecure === true,
      idleTimeoutMs: parseMs('idle-timeout', values['idle-timeout']),
      imageKeyFile: typeof values['image-key'] === 'string' ? values['image-key'] : undefined,
      metricsOpen: values['metrics-open'] === true,
      maxStreams: parseCount('max-streams', values['max-streams']),
      maxStreamsPerToken: parseCount('max-streams-per-token', values['max-streams-per-token']),
      onWarning: warnOnStderr,
      cgroup: typeof values.cgroup === 'string' ? { path: values.cgroup, cpus } : undefined,
      advertise: typeof values.advertise === 'string' ? values.advertise : undefined,
      peerCa: readCa(values['tls-ca']),
      pull:
        values['pull-from'] === undefined
          ? undefined
          : {
              peers: parsePeers(values['pull-from']),
              token: agentToken(tokenFile),
              onDecision: (e) => process.stdout.write(`${json ? JSON.stringify(e) : describeEvent(e)}\n`),
            },
      etcd,
    });
    if (values.json) printJson({ listening: agent.address, pid: process.pid });
    else process.stdout.write(`ferry agent listening on ${agent.address} (pid ${process.pid})\n`);
    await new Promise<void>((resolve) => {
      const stop = (): void => void agent.close().then(resolve);
      process.once('SIGTERM', stop);
      process.once('SIGINT', stop);
    });
    return 0;
  },
};

function parseCount(name: string, value: unknown): number | undefined {
  if (value === undefined) return undefined;
  const n = Number(value);
  if (typeof value !== 'string' || !Number.isInteger(n) || n < 1)
    throw new FerryError('FERRY_USAGE', `--${name} takes a whole number, 1 or more`);
  return n;
}
