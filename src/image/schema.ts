// A small schema language for the image manifest: each schema checks a parsed JSON value (treated
// as hostile: exact types, bounded lengths and counts), gives its TypeScript type, and renders
// itself as JSON Schema for docs/image.schema.json.
import { FerryError } from '../errors.js';

export interface Schema<T> {
  /** Throw FERRY_IMAGE_INVALID naming `path` unless `value` fits; returns it typed. */
  check(value: unknown, path: string): T;
  json(): Record<string, unknown>;
}

export type Infer<S> = S extends Schema<infer T> ? T : never;

const MAX_STRING = 1 << 20;
const MAX_ITEMS = 1 << 20;

function invalid(path: string, what: string, value: unknown): FerryError {
  const shown = JSON.stringify(value)?.slice(0, 60) ?? String(value);
  return new FerryError('FERRY_IMAGE_INVALID', `manifest: ${path} must be ${what}, not ${shown}`);
}

export function string(
  options: { pattern?: RegExp; max?: number; description?: string } = {},
): Schema<string> {
  const max = options.max ?? MAX_STRING;
  return {
    check(v, path) {
      if (typeof v !== 'string' || v.length > max || (options.pattern && !options.pattern.test(v))) {
        throw invalid(path, options.pattern ? `a string matching ${options.pattern.source}` : 'a string', v);
      }
      return v;
    },
    json: () => ({
      type: 'string',
      maxLength: max,
      ...(options.pattern ? { pattern: options.pattern.source } : {}),
      ...(options.description ? { description: options.description } : {}),
    }),
  };
}

export function integer(min: number, max: number, description?: string): Schema<number> {
  return {
    check(v, path) {
      if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) {
        throw invalid(path, `an integer from ${min} to ${max}`, v);
      }
      return v;
    },
    json: () => ({ type: 'integer', minimum: min, maximum: max, ...(description ? { description } : {}) }),
  };
}

export const boolean: Schema<boolean> = {
  check(v, path) {
    if (typeof v !== 'boolean') throw invalid(path, 'true or false', v);
    return v;
  },
  json: () => ({ type: 'boolean' }),
};

export function literal<const T extends string | number>(value: T): Schema<T> {
  return {
    check(v, path) {
      if (v !== value) throw invalid(path, JSON.stringify(value), v);
      return value;
    },
    json: () => ({ const: value }),
  };
}

export function oneOf<const T extends readonly string[]>(values: T): Schema<T[number]> {
  return {
    check(v, path) {
      if (typeof v !== 'string' || !values.includes(v)) throw invalid(path, `one of ${values.join(', ')}`, v);
      return v;
    },
    json: () => ({ enum: [...values] }),
  };
}

export function array<T>(
  item: Schema<T>,
  options: { max?: number; min?: number; length?: number } = {},
): Schema<T[]> {
  const min = options.length ?? options.min ?? 0;
  const max = options.length ?? options.max ?? MAX_ITEMS;
  return {
    check(v, path) {
      if (!Array.isArray(v) || v.length < min || v.length > max) {
        throw invalid(path, `an array of ${min === max ? min : `${min} to ${max}`} items`, v);
      }
      return v.map((x, i) => item.check(x, `${path}[${i}]`));
    },
    json: () => ({ type: 'array', items: item.json(), minItems: min, maxItems: max }),
  };
}

export function nullable<T>(inner: Schema<T>): Schema<T | null> {
  return {
    check: (v, path) => (v === null ? null : inner.check(v, path)),
    json: () => ({ anyOf: [{ type: 'null' }, inner.json()] }),
  };
}

type Shape = Record<string, Schema<unknown>>;
type ObjectOf<S extends Shape> = { [K in keyof S]: Infer<S[K]> };

/** An object with exactly these properties, all required. */
export function object<S extends Shape>(shape: S, description?: string): Schema<ObjectOf<S>> {
  return {
    check(v, path) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(path, 'an object', v);
      const record = v as Record<string, unknown>;
      for (const key of Object.keys(record)) {
        if (!(key in shape)) throw invalid(`${path}.${key}`, 'absent (unknown property)', record[key]);
      }
      const out: Record<string, unknown> = {};
      for (const [key, schema] of Object.entries(shape))
        out[key] = schema.check(record[key], `${path}.${key}`);
      return out as ObjectOf<S>;
    },
    json: () => ({
      type: 'object',
      additionalProperties: false,
      required: Object.keys(shape),
      properties: Object.fromEntries(Object.entries(shape).map(([k, s]) => [k, s.json()])),
      ...(description ? { description } : {}),
    }),
  };
}

/** A map from keys matching `key` to values. */
export function record<T>(key: RegExp, value: Schema<T>, max = 1024): Schema<Record<string, T>> {
  return {
    check(v, path) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(path, 'an object', v);
      const entries = Object.entries(v as Record<string, unknown>);
      if (entries.length > max) throw invalid(path, `an object of at most ${max} entries`, entries.length);
      return Object.fromEntries(
        entries.map(([k, x]) => {
          if (!key.test(k)) throw invalid(`${path}.${k}`, `named to match ${key.source}`, k);
          return [k, value.check(x, `${path}.${k}`)];
        }),
      );
    },
    json: () => ({
      type: 'object',
      maxProperties: max,
      propertyNames: { pattern: key.source },
      additionalProperties: value.json(),
    }),
  };
}

/** A 64-bit unsigned value as a hex string, read as a bigint: addresses, masks, registers. */
export const hex64: Schema<bigint> = {
  check(v, path) {
    if (typeof v !== 'string' || !/^0x[0-9a-f]{1,16}$/.test(v)) throw invalid(path, 'a hex string 0x...', v);
    return BigInt(v);
  },
  json: () => ({ type: 'string', pattern: '^0x[0-9a-f]{1,16}$' }),
};

/** Bytes as base64. */
export function base64(maxBytes: number): Schema<Buffer> {
  const maxChars = Math.ceil(maxBytes / 3) * 4;
  return {
    check(v, path) {
      const wellFormed =
        typeof v === 'string' &&
        v.length <= maxChars &&
        v.length % 4 === 0 &&
        /^[A-Za-z0-9+/]*={0,2}$/.test(v);
      const bytes = wellFormed ? Buffer.from(v, 'base64') : undefined;
      if (!bytes || bytes.length > maxBytes) throw invalid(path, `base64 of at most ${maxBytes} bytes`, v);
      return bytes;
    },
    json: () => ({ type: 'string', contentEncoding: 'base64', maxLength: maxChars }),
  };
}

type TaggedOf<T extends string, V extends Record<string, Schema<object>>> = {
  [K in keyof V & string]: { [P in T]: K } & Infer<V[K]>;
}[keyof V & string];

/** One of several object shapes, told apart by the string property `tag`. */
export function tagged<T extends string, V extends Record<string, Schema<object>>>(
  tag: T,
  variants: V,
): Schema<TaggedOf<T, V>> {
  const names = Object.keys(variants);
  return {
    check(v, path) {
      if (typeof v !== 'object' || v === null || Array.isArray(v)) throw invalid(path, 'an object', v);
      const { [tag]: name, ...rest } = v as Record<string, unknown>;
      const variant = typeof name === 'string' && Object.hasOwn(variants, name) ? variants[name] : undefined;
      if (!variant) throw invalid(`${path}.${tag}`, `one of ${names.join(', ')}`, name);
      return { [tag]: name, ...variant.check(rest, path) } as TaggedOf<T, V>;
    },
    json: () => ({
      oneOf: names.map((name) => {
        const inner = variants[name]!.json() as { properties?: object; required?: string[] };
        return {
          ...inner,
          properties: { [tag]: { const: name }, ...inner.properties },
          required: [tag, ...(inner.required ?? [])],
        };
      }),
    }),
  };
}
