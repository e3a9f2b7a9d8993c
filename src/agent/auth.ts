// Who may call the agent: bearer tokens from a file, one per line, each optionally bound to a uid
// (`<token> uid=<n>`): such a caller acts only on processes and images of that uid.
import { timingSafeEqual } from 'node:crypto';
import { readFileSync, statSync } from 'node:fs';
import { FerryError } from '../errors.js';

export interface Caller {
  /** The uid this caller's token is bound to; undefined: any. */
  uid: number | undefined;
  /** The token it gave (none for an agent that takes none): the key its migrations are sealed with. */
  token: Buffer | undefined;
  /** Which token: limits count per token. */
  tokenId: string;
}

/** The caller of an agent that takes no token. */
export const ANYONE: Caller = { uid: undefined, token: undefined, tokenId: 'anyone' };

export interface TokenEntry {
  token: Buffer;
  uid: number | undefined;
}

const MIN_TOKEN = 16;

/** Parse a token file; blank lines and lines starting with # are skipped. */
export function parseTokenFile(text: string, path: string): TokenEntry[] {
  const entries: TokenEntry[] = [];
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#')) return;
    const [token, ...rest] = line.split(/\s+/);
    const bad = (why: string): FerryError => new FerryError('FERRY_USAGE', `${path}:${i + 1}: ${why}`);
    if (token!.length < MIN_TOKEN) throw bad(`a token needs at least ${MIN_TOKEN} characters`);
    let uid: number | undefined;
    for (const field of rest) {
      const m = /^uid=(\d+)$/.exec(field);
      if (!m) throw bad(`unknown field "${field}" (expected uid=<n>)`);
      uid = Number(m[1]);
    }
    entries.push({ token: Buffer.from(token!), uid });
  });
  if (entries.length === 0) throw new FerryError('FERRY_USAGE', `${path} holds no token`);
  return entries;
}

export function readTokenFile(path: string): TokenEntry[] {
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new FerryError('FERRY_USAGE', `cannot read the token file ${path}: ${String(err)}`);
  }
  return parseTokenFile(text, path);
}

/** The caller an `Authorization: Bearer <token>` header names, or undefined when it names none. */
export function authenticate(entries: readonly TokenEntry[], header: string | undefined): Caller | undefined {
  const m = /^Bearer\s+(\S+)$/i.exec(header ?? '');
  if (!m) return undefined;
  const given = Buffer.from(m[1]!);
  const index = entries.findIndex((e) => e.token.length === given.length && timingSafeEqual(e.token, given));
  return index < 0
    ? undefined
    : { uid: entries[index]!.uid, token: entries[index]!.token, tokenId: String(index) };
}

/** What is wrong with a token file's permissions, if anything: one others may read. */
export function tokenFileWarning(path: string): string | undefined {
  try {
    const mode = statSync(path).mode & 0o777;
    if (mode & 0o077)
      return `the token file ${path} may be read by others (mode ${mode.toString(8)}): chmod 600 ${path}`;
  } catch {
    // unreadable: reading it says so
  }
  return undefined;
}

/** Refuse unless `caller` may act on something owned by `uid`. */
export function authorize(caller: Caller, uid: number, what: string): void {
  if (caller.uid !== undefined && caller.uid !== uid)
    throw new FerryError(
      'FERRY_AUTH',
      `this token may act on uid ${caller.uid}'s processes, and ${what} is uid ${uid}'s`,
    );
}
