// The PAGEMAP_SCAN ioctl on /proc/PID/pagemap (Linux 6.7+): page categories of a whole range in one
// call, as runs of pages that share them, instead of one 64-bit entry per page.
import { ioctl, ioctlAsync, iowr } from './ioctl.js';
import { addressOf } from './libc.js';

/** PAGE_IS_* category bits. */
export const PAGE_IS = {
  WPALLOWED: 1n << 0n,
  WRITTEN: 1n << 1n,
  FILE: 1n << 2n,
  PRESENT: 1n << 3n,
  SWAPPED: 1n << 4n,
  PFNZERO: 1n << 5n,
  HUGE: 1n << 6n,
  SOFT_DIRTY: 1n << 7n,
  /** A guard region's page (MADV_GUARD_INSTALL; Linux 6.14). */
  GUARD: 1n << 8n,
} as const;

/** PM_SCAN_* flags. */
export const PM_SCAN = { WP_MATCHING: 1n << 0n, CHECK_WPASYNC: 1n << 1n } as const;

const ARG_SIZE = 96;
const REGION_SIZE = 24;
export const PAGEMAP_SCAN = iowr(0x66, 16, ARG_SIZE);

/** A run of pages [start, end) that share `categories`. */
export interface PageRegion {
  start: bigint;
  end: bigint;
  categories: bigint;
}

export interface ScanRequest {
  start: bigint;
  end: bigint;
  flags?: bigint;
  /** Stop after this many pages (0: no limit). */
  maxPages?: bigint;
  categoryInverted?: bigint;
  categoryMask?: bigint;
  categoryAnyof?: bigint;
  returnMask: bigint;
}

export interface ScanResult {
  regions: PageRegion[];
  /** Where the walk stopped; equals `end` when the range was covered. */
  walkEnd: bigint;
}

/** The pm_scan_arg of `req`, its output vector `vec`. */
function scanArg(req: ScanRequest, vec: Buffer): Buffer {
  const arg = Buffer.alloc(ARG_SIZE);
  const fields = [
    BigInt(ARG_SIZE),
    req.flags ?? 0n,
    req.start,
    req.end,
    0n,
    addressOf(vec),
    BigInt(Math.floor(vec.length / REGION_SIZE)),
    req.maxPages ?? 0n,
    req.categoryInverted ?? 0n,
    req.categoryMask ?? 0n,
    req.categoryAnyof ?? 0n,
    req.returnMask,
  ];
  fields.forEach((v, i) => arg.writeBigUInt64LE(v, i * 8));
  return arg;
}

/** What a call that returned `count` left in `arg` and `vec`. */
function scanResult(count: number, arg: Buffer, vec: Buffer): ScanResult {
  const regions: PageRegion[] = [];
  for (let i = 0; i < count; i++) {
    regions.push({
      start: vec.readBigUInt64LE(i * REGION_SIZE),
      end: vec.readBigUInt64LE(i * REGION_SIZE + 8),
      categories: vec.readBigUInt64LE(i * REGION_SIZE + 16),
    });
  }
  return { regions, walkEnd: arg.readBigUInt64LE(32) };
}

/**
 * One PAGEMAP_SCAN call into `vec` (a buffer of page_region slots). Returns the regions found and
 * where the walk stopped, which is short of `end` when `vec` filled up.
 */
export function pagemapScan(pagemapFd: number, req: ScanRequest, vec: Buffer): ScanResult {
  const arg = scanArg(req, vec);
  return scanResult(ioctl(pagemapFd, PAGEMAP_SCAN, 'PAGEMAP_SCAN', arg), arg, vec);
}

/** pagemapScan() on one of libuv's threads; `vec` must stay untouched until it settles. */
export async function pagemapScanAsync(
  pagemapFd: number,
  req: ScanRequest,
  vec: Buffer,
): Promise<ScanResult> {
  const arg = scanArg(req, vec);
  return scanResult(await ioctlAsync(pagemapFd, PAGEMAP_SCAN, 'PAGEMAP_SCAN', arg), arg, vec);
}

/** Bytes of one page_region slot, to size the `vec` buffer. */
export const PAGE_REGION_SIZE = REGION_SIZE;
