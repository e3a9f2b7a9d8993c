// JSON for image manifests: bigints as "0x..." strings, bytes as base64, object keys in insertion
// order, so the same manifest always serializes to the same text.

export type JsonValue = string | number | boolean | null | JsonValue[] | { [key: string]: JsonValue };

export function toJsonValue(value: unknown): JsonValue {
  if (typeof value === 'bigint') return `0x${value.toString(16)}`;
  if (value instanceof Uint8Array)
    return Buffer.from(value.buffer, value.byteOffset, value.byteLength).toString('base64');
  if (Array.isArray(value)) return value.map(toJsonValue);
  if (value === null || value === undefined) return null;
  if (typeof value === 'object') {
    const out: Record<string, JsonValue> = {};
    for (const [k, v] of Object.entries(value)) if (v !== undefined) out[k] = toJsonValue(v);
    return out;
  }
  if (typeof value === 'string' || typeof value === 'number' || typeof value === 'boolean') return value;
  throw new TypeError(`cannot encode ${typeof value} as JSON`);
}

export function serialize(value: unknown): string {
  return `${JSON.stringify(toJsonValue(value), null, 1)}\n`;
}
