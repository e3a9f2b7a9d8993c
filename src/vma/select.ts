// The selection language for desired VMAs (docs/VMA-SELECTION.md): comma-separated terms whose union
// is selected, minus every VMA a `!term` matches.
import { FerryError } from '../errors.js';
import { FILE_KINDS, SPECIAL_KINDS, VMA_KINDS, type Vma, type VmaKind } from './vma.js';

type Predicate = (vma: Vma) => boolean;

export interface VmaSelection {
  /** The spec as given. */
  readonly spec: string;
  matches(vma: Vma): boolean;
}

/** Terms that name a set of kinds or a property, beside the kinds themselves. */
export const VMA_GROUPS: Record<string, { description: string; test: Predicate }> = {
  all: { description: 'every VMA', test: () => true },
  file: {
    description: `every file-backed kind (${[...FILE_KINDS].join(', ')})`,
    test: (v) => FILE_KINDS.has(v.kind),
  },
  shared: { description: 'every MAP_SHARED VMA', test: (v) => v.perms[3] === 's' },
  private: { description: 'every MAP_PRIVATE VMA', test: (v) => v.perms[3] === 'p' },
  special: { description: 'vdso, vvar and vsyscall', test: (v) => SPECIAL_KINDS.has(v.kind) },
};

const PERM_LETTERS: Record<string, Predicate> = {
  r: (v) => v.perms[0] === 'r',
  w: (v) => v.perms[1] === 'w',
  x: (v) => v.perms[2] === 'x',
  s: (v) => v.perms[3] === 's',
  p: (v) => v.perms[3] === 'p',
};

function bad(term: string, why: string): FerryError {
  return new FerryError('FERRY_BAD_VMA_SPEC', `bad VMA selection term ${JSON.stringify(term)}: ${why}`);
}

function permTerm(term: string, mask: string): Predicate {
  if (/^[rwxsp]+$/.test(mask)) {
    const tests = [...mask].map((c) => PERM_LETTERS[c]!);
    return (v) => tests.every((t) => t(v));
  }
  if (/^[r-][w-][x-][ps]?$/.test(mask)) return (v) => [...mask].every((c, i) => v.perms[i] === c);
  throw bad(term, 'a permission is letters from "rwxsp" (all required) or a maps-style mask such as "r-xp"');
}

function globToRegExp(glob: string): RegExp {
  const body = [...glob]
    .map((c) => (c === '*' ? '.*' : c === '?' ? '.' : c.replace(/[\\^$.+()|{}[\]]/g, '\\$&')))
    .join('');
  return new RegExp(`^${body}$`, 's');
}

function pathTerm(term: string, glob: string): Predicate {
  if (glob === '') throw bad(term, 'path: needs a glob, e.g. path:/usr/lib/*');
  const re = globToRegExp(glob);
  return (v) => re.test(v.name);
}

const ADDRESS = /^0x([0-9a-f]+)(?:-0x([0-9a-f]+))?$/i;

function addressTerm(term: string, m: RegExpExecArray): Predicate {
  const start = BigInt(`0x${m[1]}`);
  if (m[2] === undefined) return (v) => v.start <= start && start < v.end;
  const end = BigInt(`0x${m[2]}`);
  if (end <= start) throw bad(term, 'an address range must end after it starts');
  return (v) => v.start < end && start < v.end;
}

function parseTerm(term: string): Predicate {
  if ((VMA_KINDS as readonly string[]).includes(term)) return (v) => v.kind === (term as VmaKind);
  const group = VMA_GROUPS[term];
  if (group) return group.test;
  if (term.length === 1 && 'rwx'.includes(term)) return PERM_LETTERS[term]!;
  if (term.startsWith('perm:')) return permTerm(term, term.slice(5));
  if (term.startsWith('path:')) return pathTerm(term, term.slice(5));
  const address = ADDRESS.exec(term);
  if (address) return addressTerm(term, address);
  throw bad(
    term,
    `not a kind (${VMA_KINDS.join(', ')}), a group (${Object.keys(VMA_GROUPS).join(', ')}), ` +
      'a permission (r, w, x, perm:...), a path glob (path:...) or an address or range (0x...-0x...)',
  );
}

/** Parse a selection spec; throws FERRY_BAD_VMA_SPEC naming the first bad term. */
export function parseVmaSelection(spec: string): VmaSelection {
  const include: Predicate[] = [];
  const exclude: Predicate[] = [];
  for (const raw of spec.split(',')) {
    const term = raw.trim();
    const negated = term.startsWith('!');
    const body = negated ? term.slice(1).trim() : term;
    if (body === '') throw bad(raw, spec.trim() === '' ? 'the selection is empty' : 'empty term');
    (negated ? exclude : include).push(parseTerm(body));
  }
  const included: Predicate = include.length === 0 ? () => true : (v) => include.some((p) => p(v));
  return { spec, matches: (v) => included(v) && !exclude.some((p) => p(v)) };
}
