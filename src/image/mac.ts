// Keyed MACs (HMAC-SHA256) over an image's manifest, which names every part with its size and
// checksum: who holds the key vouches for the image. An agent seals the images it writes with a key
// of its own, and refuses to restore one it did not; a migration's source seals the stream's
// manifest with a key made for that migration alone (its target's nonce, the source's token), which
// a recorded stream sent again under another migration cannot carry. The unkeyed checksums stay,
// for damage; the parts' integrity against a forger on the path rests on TLS.
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { chmodSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { FerryError } from '../errors.js';
import { MANIFEST } from './sink.js';

/** Bytes of a key. */
const KEY_BYTES = 32;
/** The file beside manifest.json that holds an agent's MAC of it. */
export const MANIFEST_MAC = 'manifest.mac';

/** HMAC-SHA256 of `text` under `key`, hex. */
export function macOf(key: Buffer, text: string | Buffer): string {
  return createHmac('sha256', key).update(text).digest('hex');
}

/** Whether `given` is the MAC of `text` under `key` (compared in constant time). */
export function macMatches(key: Buffer, text: string | Buffer, given: string): boolean {
  const want = Buffer.from(macOf(key, text), 'hex');
  const got = Buffer.from(/^[0-9a-f]{64}$/.test(given) ? given : '', 'hex');
  return got.length === want.length && timingSafeEqual(got, want);
}

/**
 * The key of migration `id`: the target's `nonce` for it under the source's token (none, for an
 * agent that takes no token: then the seal tells only damage).
 */
export function streamKey(token: string | Buffer | undefined, id: string, nonce: string): Buffer {
  return createHmac('sha256', token ?? '')
    .update(`ferry-migration\0${id}\0${nonce}`)
    .digest();
}

/** A new nonce, hex. */
export const newNonce = (): string => randomBytes(16).toString('hex');

/**
 * An agent's image key: the file `path` (hex), made with a new random key (mode 0600) when missing.
 * `made` tells whether it was.
 */
export function loadImageKey(path: string): { key: Buffer; made: boolean } {
  let text: string;
  try {
    text = readFileSync(path, 'utf8').trim();
  } catch {
    const key = randomBytes(KEY_BYTES);
    try {
      writeFileSync(path, `${key.toString('hex')}\n`, { mode: 0o600, flag: 'wx' });
      chmodSync(path, 0o600);
    } catch (err) {
      throw new FerryError('FERRY_USAGE', `cannot make the image key ${path}: ${String(err)}`);
    }
    return { key, made: true };
  }
  if (!/^[0-9a-f]{64}$/.test(text))
    throw new FerryError('FERRY_USAGE', `${path} holds no image key (64 hex digits)`);
  return { key: Buffer.from(text, 'hex'), made: false };
}

/** Seal the image in `dir` (its manifest) with `key`: manifest.mac beside manifest.json. */
export function sealImage(key: Buffer, dir: string): void {
  writeFileSync(join(dir, MANIFEST_MAC), `${macOf(key, readFileSync(join(dir, MANIFEST)))}\n`, {
    mode: 0o600,
  });
}

/** Refuse (FERRY_AUTH) the image in `dir` unless `key` sealed it as it is now. */
export function verifyImage(key: Buffer, dir: string, name: string): void {
  let manifest: Buffer;
  let mac: string;
  try {
    manifest = readFileSync(join(dir, MANIFEST));
    mac = readFileSync(join(dir, MANIFEST_MAC), 'utf8').trim();
  } catch {
    throw new FerryError('FERRY_AUTH', `image ${name} was not written by this agent (it has no seal of its)`);
  }
  if (!macMatches(key, manifest, mac))
    throw new FerryError(
      'FERRY_AUTH',
      `image ${name} is not as this agent wrote it (its seal does not match)`,
    );
}
