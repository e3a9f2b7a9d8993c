// The native packages ferry uses, loaded with require(): Node's ESM loader takes 10-35 ms more per
// CommonJS package than require() does (it scans each for its exports), on every command's start.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

/** koffi, the foreign function interface to libc (src/sys only). */
export const koffi = require('koffi') as typeof import('koffi');

let zstd: typeof import('zstd-napi') | undefined;

/** zstd-napi, loaded the first time an image is compressed or decompressed. */
export function zstdNapi(): typeof import('zstd-napi') {
  return (zstd ??= require('zstd-napi') as typeof import('zstd-napi'));
}

/** @node-rs/xxhash: native XXH3 and xxHash64. */
export const nativeXxhash = require('@node-rs/xxhash') as typeof import('@node-rs/xxhash');
