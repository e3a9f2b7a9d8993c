// Sets of addresses as sorted, disjoint [start, end) spans: what dirty tracking and page layers
// compute with (pages written, pages an earlier layer holds).

export interface Span {
  start: bigint;
  end: bigint;
}

/** The span of sorted, disjoint `spans` that holds `addr`, if one does (a binary search). */
export function spanAt<T extends Span>(spans: readonly T[], addr: bigint): T | undefined {
  let lo = 0;
  let hi = spans.length;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (spans[mid]!.end <= addr) lo = mid + 1;
    else hi = mid;
  }
  const span = spans[lo];
  return span !== undefined && span.start <= addr ? span : undefined;
}

/** Append [start, end) to sorted `out`, merging it with the last span when they touch. */
export function pushSpan(out: Span[], start: bigint, end: bigint): void {
  if (start >= end) return;
  const last = out.at(-1);
  if (last && last.end >= start) {
    if (end > last.end) last.end = end;
  } else {
    out.push({ start, end });
  }
}

/** Addresses in both `a` and `b`. */
export function intersectSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  let j = 0;
  for (const x of a) {
    while (j < b.length && b[j]!.end <= x.start) j++;
    for (let k = j; k < b.length && b[k]!.start < x.end; k++) {
      const y = b[k]!;
      pushSpan(out, x.start > y.start ? x.start : y.start, x.end < y.end ? x.end : y.end);
    }
  }
  return out;
}

/**
 * The parts of each span of `a` outside every span of `b` (both sorted and disjoint), each made by
 * `clip` from the span of `a` it comes from.
 */
export function cutSpans<T extends Span>(
  a: readonly T[],
  b: readonly Span[],
  clip: (from: T, start: bigint, end: bigint) => T,
): T[] {
  const out: T[] = [];
  let j = 0;
  for (const x of a) {
    while (j < b.length && b[j]!.end <= x.start) j++;
    let at = x.start;
    for (let k = j; k < b.length && b[k]!.start < x.end; k++) {
      if (b[k]!.start > at) out.push(clip(x, at, b[k]!.start));
      if (b[k]!.end > at) at = b[k]!.end;
    }
    if (at < x.end) out.push(clip(x, at, x.end));
  }
  return out;
}

/** `older` with `newer` laid over it (both sorted and disjoint): `newer` wins where they overlap. */
export function overlaySpans<T extends Span>(
  older: readonly T[],
  newer: readonly T[],
  clip: (from: T, start: bigint, end: bigint) => T,
): T[] {
  const rest = cutSpans(older, newer, clip);
  const out: T[] = [];
  for (let i = 0, j = 0; i < rest.length || j < newer.length;) {
    out.push(
      j >= newer.length || (i < rest.length && rest[i]!.start < newer[j]!.start) ? rest[i++]! : newer[j++]!,
    );
  }
  return out;
}

/** Addresses in `a` but not in `b`. */
export function subtractSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  return cutSpans(a, b, (_, start, end) => ({ start, end }));
}

/** Addresses in `a` or `b`. */
export function unionSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const next = j >= b.length || (i < a.length && a[i]!.start <= b[j]!.start) ? a[i++]! : b[j++]!;
    pushSpan(out, next.start, next.end);
  }
  return out;
}

/** The addresses of `spans` (in order, maybe touching or overlapping), merged. */
export function mergeSpans(spans: readonly Span[]): Span[] {
  const out: Span[] = [];
  for (const x of spans) pushSpan(out, x.start, x.end);
  return out;
}

/** The addresses of `ranges` (in order), merged. */
export function rangeSpans(ranges: readonly { addr: bigint; len: number }[]): Span[] {
  const out: Span[] = [];
  for (const r of ranges) pushSpan(out, r.addr, r.addr + BigInt(r.len));
  return out;
}

/** Bytes covered. */
export const spanBytes = (spans: readonly Span[]): number =>
  spans.reduce((n, s) => n + Number(s.end - s.start), 0);
