// Talking to an agent: where it is, how to authenticate, one JSON request, or an open request for a
// migration stream.
import { request as httpRequest, type ClientRequest, type IncomingMessage } from 'node:http';
import { request as httpsRequest } from 'node:https';
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
