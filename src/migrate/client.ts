// Talking to an agent: where it is, how to authenticate, one JSON request, or an open request for a
// migration stream; and, before a token goes out, whether it speaks what we are about to speak.
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
import { connect as tlsConnect } from 'node:tls';
import { FerryError } from '../errors.js';

export interface AgentEndpoint {
  host: string;
  port: number;
  /** Bearer token. */
  token?: string;
  /** Trust this CA (PEM) and speak TLS. */
  ca?: Buffer;
}

/** Parse `host:port` (`[v6addr]:port` for IPv6). */
export function parseAddress(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text);
  const port = Number(m?.[3]);
  if (!m || port < 0 || port > 65535)
    throw new FerryError('FERRY_USAGE', `"${text}" is not host:port (e.g. 10.0.0.2:7070)`);
  return { host: m[1] ?? m[2]!, port };
}

export const describe = (e: AgentEndpoint): string =>
  `${e.host.includes(':') ? `[${e.host}]` : e.host}:${e.port}`;

function connectionError(e: AgentEndpoint, err: unknown): FerryError {
  const code = (err as NodeJS.ErrnoException).code;
  return new FerryError(
    'FERRY_CONNECTION',
    `cannot reach the agent at ${describe(e)}: ${code ?? (err instanceof Error ? err.message : String(err))}`,
    { cause: err },
  );
}

/** Open a request; the caller writes the body. */
export function openRequest(
  e: AgentEndpoint,
  method: string,
  path: string,
  headers: Record<string, string> = {},
): ClientRequest {
  const options = {
    host: e.host,
    port: e.port,
    method,
    path,
    headers: { ...headers, ...(e.token ? { authorization: `Bearer ${e.token}` } : {}) },
  };
  return e.ca ? httpsRequest({ ...options, ca: e.ca }) : httpRequest(options);
}

/** Wait for the response's head; anything but 200 becomes the agent's error. */
export function responseOf(
  e: AgentEndpoint,
  req: ClientRequest,
  timeoutMs: number,
): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      req.destroy();
      reject(
        new FerryError(
          'FERRY_CONNECTION',
          `the agent at ${describe(e)} did not answer within ${timeoutMs} ms`,
        ),
      );
    }, timeoutMs);
    req.once('error', (err) => {
      clearTimeout(timer);
      reject(connectionError(e, err));
    });
    req.once('response', (res) => {
      clearTimeout(timer);
      if (res.statusCode === 200) return resolve(res);
      void readAll(res).then(
        (text) => reject(agentError(e, res.statusCode ?? 0, text)),
        (err: unknown) => reject(connectionError(e, err)),
      );
    });
  });
}

async function readAll(res: IncomingMessage): Promise<string> {
  let text = '';
  for await (const chunk of res as AsyncIterable<Buffer>) text += chunk.toString('utf8');
  return text;
}

/** The agent answered with an error status. */
export class AgentError extends FerryError {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(status === 401 || status === 403 ? 'FERRY_AUTH' : 'FERRY_CONNECTION', message);
  }
}

function agentError(e: AgentEndpoint, status: number, text: string): FerryError {
  let error: { code?: string; message?: string } | undefined;
  try {
    error = (JSON.parse(text) as { error?: { code?: string; message?: string } }).error;
  } catch {
    // not JSON: reported as it is
  }
  const message = `the agent at ${describe(e)} refused (${status}): ${error?.message ?? text.trim().slice(0, 200)}`;
  return new AgentError(status, message);
}

/** One JSON request and its JSON answer. */
export async function callAgent<T>(
  e: AgentEndpoint,
  method: string,
  path: string,
  body: unknown,
  timeoutMs: number,
): Promise<T> {
  const req = openRequest(e, method, path, body === undefined ? {} : { 'content-type': 'application/json' });
  const response = responseOf(e, req, timeoutMs);
  req.end(body === undefined ? undefined : JSON.stringify(body));
  const text = await readAll(await response);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new FerryError('FERRY_CONNECTION', `the agent at ${describe(e)} answered with something not JSON`);
  }
}

/** Whether `host:port` completes a TLS handshake (any certificate): it speaks TLS. */
function speaksTls(e: AgentEndpoint, timeoutMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = tlsConnect({ host: e.host, port: e.port, rejectUnauthorized: false, servername: '' });
    const done = (yes: boolean): void => {
      clearTimeout(timer);
      socket.destroy();
      resolve(yes);
    };
    const timer = setTimeout(() => done(false), timeoutMs);
    socket.once('secureConnect', () => done(true));
    socket.once('error', () => done(false));
  });
}

const TLS_PLAIN = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'EPROTO']);
const TLS_UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/**
 * Make sure the agent at `e` speaks what this client is about to (TLS when `e.ca` is given, else
 * plain HTTP) before any token goes out: `GET /v1/health`, which needs none. A mismatch is said
 * as such (the agent speaks TLS: pass --tls-ca), not as a reset connection.
 */
export async function probeAgent(e: AgentEndpoint, timeoutMs: number): Promise<void> {
  const anonymous = { ...e, token: undefined };
  try {
    const req = openRequest(anonymous, 'GET', '/v1/health');
    const response = responseOf(anonymous, req, timeoutMs);
    req.end();
    await readAll(await response);
  } catch (err) {
    const code = errorCode(err);
    if (e.ca && code !== undefined && TLS_PLAIN.has(code))
      throw new FerryError(
        'FERRY_CONNECTION',
        `the agent at ${describe(e)} does not speak TLS: leave out --tls-ca`,
        { cause: err },
      );
    if (e.ca && code !== undefined && TLS_UNTRUSTED.has(code))
      throw new FerryError(
        'FERRY_CONNECTION',
        `the agent at ${describe(e)} has a certificate that CA did not sign (${code})`,
        { cause: err },
      );
    if (!e.ca && (await speaksTls(e, timeoutMs)))
      throw new FerryError(
        'FERRY_CONNECTION',
        `the agent at ${describe(e)} speaks TLS: pass --tls-ca <the CA that signed its certificate>`,
        { cause: err },
      );
    throw err;
  }
}

/** The code of a connection error, or of the error it wraps. */
function errorCode(err: unknown): string | undefined {
  for (let e = err; e instanceof Error; e = e.cause) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code && code !== 'FERRY_CONNECTION') return code;
  }
  return undefined;
}
