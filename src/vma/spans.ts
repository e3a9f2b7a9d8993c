// Sets of addresses as sorted, disjoint [start, end) spans: what dirty tracking and page layers
// compute with (pages written, pages an earlier layer holds).

export interface Span {
  start: bigint;
  end: bigint;
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

/** Addresses in `a` but not in `b`. */
export function subtractSpans(a: readonly Span[], b: readonly Span[]): Span[] {
  const out: Span[] = [];
  let j = 0;
  for (const x of a) {
    while (j < b.length && b[j]!.end <= x.start) j++;
    let at = x.start;
    for (let k = j; k < b.length && b[k]!.start < x.end; k++) {
      pushSpan(out, at, b[k]!.start);
      if (b[k]!.end > at) at = b[k]!.end;
    }
    pushSpan(out, at, x.end);
  }
  return out;
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

/** Bytes covered. */
export const spanBytes = (spans: readonly Span[]): number =>
  spans.reduce((n, s) => n + Number(s.end - s.start), 0);
