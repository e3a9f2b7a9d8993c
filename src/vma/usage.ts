// Page counts per VMA, and which pages a checkpoint stores: the rule shared by inspect and dump.
import { mergeSpans } from './spans.js';
import { PAGE_SHIFT, PAGE_SIZE } from '../proc/pagemap.js';
import { PAGE, type PageRun, type PageScanner } from './pages.js';
import { SPECIAL_KINDS, type Vma } from './vma.js';

export interface PageCounts {
  /** Pages in memory (including ones mapped to the shared zero page). */
  resident: number;
  swapped: number;
  /** Anonymous pages, in memory or swapped: private memory and copied-on-write file pages. */
  anon: number;
  /** Page-cache or shmem pages in memory. */
  file: number;
  /** Pages mapped to the kernel's shared zero page (read, never written). */
  zero: number;
  /** Pages backed by transparent or hugetlb huge pages. */
  huge: number;
  /** Pages a checkpoint stores. */
  dump: number;
}

export const emptyCounts = (): PageCounts => ({
  resident: 0,
  swapped: 0,
  anon: 0,
  file: 0,
  zero: 0,
  huge: 0,
  dump: 0,
});

/**
 * Kinds of shared VMA whose content exists nowhere else once the process is gone (a deleted
 * file's or memfd's is saved whole, not by page).
 */
const SHARED_WITHOUT_FILE = new Set(['anon-shared']);

/**
 * Whether a checkpoint stores a page with these PAGE flags: in a private VMA, its anonymous pages
 * (never the zero page, nor a guard region's; file pages come back from the file); in shared memory that no file keeps,
 * every page; in kernel-provided VMAs, none.
 */
export function dumpsPage(vma: Pick<Vma, 'kind' | 'perms'>, flags: number): boolean {
  if (SPECIAL_KINDS.has(vma.kind) || flags & (PAGE.ZERO | PAGE.GUARD)) return false;
  if (vma.perms[3] === 'p') return (flags & PAGE.FILE) === 0;
  return SHARED_WITHOUT_FILE.has(vma.kind);
}

function addRun(counts: PageCounts, vma: Vma, flags: number, pages: number): void {
  if (flags & PAGE.PRESENT) counts.resident += pages;
  if (flags & PAGE.SWAPPED) counts.swapped += pages;
  if (flags & PAGE.FILE) counts.file += pages;
  else counts.anon += pages;
  if (flags & PAGE.ZERO) counts.zero += pages;
  if (dumpsPage(vma, flags)) counts.dump += pages;
}

/**
 * Count pages for each VMA (sorted by address, none in the vsyscall area), with `scanner`.
 * `hugeBytes` gives the bytes a VMA has in huge pages (from smaps). `onProgress` hears the bytes of
 * address space covered so far.
 */
export function countPages(
  vmas: readonly Vma[],
  scanner: PageScanner,
  hugeBytes: (vma: Vma) => number,
  onProgress?: (scannedBytes: number) => void,
): PageCounts[] {
  const counts = vmas.map((v) => ({ ...emptyCounts(), huge: Math.floor(hugeBytes(v) / PAGE_SIZE) }));
  let i = 0;
  let scanned = 0;
  const onRun = (run: PageRun): void => {
    for (let start = run.start; start < run.end;) {
      while (vmas[i]!.end <= start) i++;
      const vma = vmas[i]!;
      const end = run.end < vma.end ? run.end : vma.end;
      addRun(counts[i]!, vma, run.flags, Number((end - start) >> PAGE_SHIFT));
      start = end;
    }
  };
  for (const range of mergeSpans(vmas)) {
    while (vmas[i]!.end <= range.start) i++;
    scanner.scan(range, onRun);
    scanned += Number(range.end - range.start);
    onProgress?.(scanned);
  }
  return counts;
}
