// Free stretches of an address space.

export interface Span {
  start: bigint;
  end: bigint;
}

/** Lowest and highest addresses ferry places anything at (above mmap_min_addr, below the stack). */
const LOW = 0x10000000n;
const HIGH = 0x7ff000000000n;

/**
 * The lowest `size`-byte, `align`-aligned range at or above LOW that overlaps none of `occupied`.
 */
export function findGap(occupied: readonly Span[], size: bigint, align = 0x200000n): bigint | undefined {
  const taken = [...occupied].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  let candidate = LOW;
  for (const span of taken) {
    if (span.end <= candidate) continue;
    if (span.start >= candidate + size) break;
    candidate = ((span.end + align - 1n) / align) * align;
  }
  return candidate + size <= HIGH ? candidate : undefined;
}
