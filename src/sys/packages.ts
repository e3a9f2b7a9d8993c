// The native packages ferry uses, loaded with require() the first time each is needed: the CLI's
// startup snapshot (scripts/bundle.ts) can hold no native code, and most commands need only some.
// koffi and @node-rs/xxhash are taken straight from their x86_64 glibc packages, which their own
// entry points pick after probing the platform (reading Node's ELF headers, a process report):
// 5-10 ms of each command's start. Elsewhere the entry points do the choosing.
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

let require: NodeJS.Require | undefined;

/**
 * Where the native binaries were, relative to the bundle, when scripts/bundle.ts built it (the
 * library, not bundled, has none). Opened straight with process.dlopen(): the module loader's
 * first require() costs 3-10 ms in a Node started from a snapshot, dlopen() 1.
 */
const bundled = (globalThis as { ferryNatives?: Record<string, string> }).ferryNatives;

/** The x86_64 glibc binaries of koffi and @node-rs/xxhash, as packages name them. */
export const NATIVE_BINARIES = {
  koffi: '@koromix/koffi-linux-x64/linux_x64/koffi.node',
  xxhash: '@node-rs/xxhash-linux-x64-gnu',
} as const;

/**
 * Native binary `key`: from where the bundle found it, else from its package, else from package
 * `entry`, whose entry point picks the binary for the platform.
 */
function loadNative<T>(key: keyof typeof NATIVE_BINARIES, entry: string): T {
  const at = bundled?.[key];
  const file = at === undefined ? undefined : fileURLToPath(new URL(at, import.meta.url));
  if (file !== undefined && existsSync(file)) {
    const module = { exports: {} };
    try {
      process.dlopen(module, file);
      return module.exports as T;
    } catch {
      // The package's entry point says why, below.
    }
  }
  try {
    return load<T>(NATIVE_BINARIES[key]);
  } catch {
    return load<T>(entry);
  }
}

function load<T>(name: string): T {
  require ??= createRequire(import.meta.url);
  return require(name) as T;
}

type Koffi = typeof import('koffi');
let koffiPackage: Koffi | undefined;

/** koffi, the foreign function interface to libc (src/sys only). */
export function koffi(): Koffi {
  return (koffiPackage ??= loadNative<Koffi>('koffi', 'koffi'));
}

type Zstd = typeof import('zstd-napi');
let zstd: Zstd | undefined;

/** zstd-napi, loaded the first time an image is compressed or decompressed. */
export function zstdNapi(): Zstd {
  return (zstd ??= load<Zstd>('zstd-napi'));
}

type XxhashWasm = (typeof import('xxhash-wasm'))['default'];
let wasm: XxhashWasm | undefined;

/** xxhash-wasm's initializer, for page hashes (dirty tracking without the kernel's help). */
export function xxhashWasm(): XxhashWasm {
  return (wasm ??= load<XxhashWasm>('xxhash-wasm'));
}

type Xxhash = typeof import('@node-rs/xxhash');
let xxhash: Xxhash | undefined;

/** @node-rs/xxhash: native XXH3 and xxHash64. */
export function nativeXxhash(): Xxhash {
  return (xxhash ??= loadNative<Xxhash>('xxhash', '@node-rs/xxhash'));
}

/**
 * Load koffi and the native hash now: a long-running agent does it as it starts rather than in the
 * middle of its first migration, while the process is frozen.
 */
export function loadNativePackages(): void {
  koffi();
  nativeXxhash();
}

type Etcd = typeof import('etcd3');
let etcd: Etcd | undefined;

/** etcd3, the etcd client (gRPC), loaded by the agents and balancers given --etcd. */
export function etcd3(): Etcd {
  return (etcd ??= load<Etcd>('etcd3'));
}
