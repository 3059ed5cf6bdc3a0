/** A plain JSON object (not null, not an array): what parsed JSON from a client or a backend is checked with. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}
