/** A plain JSON object (not null, not an array): what parsed JSON from a client or a backend is checked with. */
export function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** `s` parsed as JSON, or `s` itself when it is not JSON (tool arguments and results may be either). */
export function jsonOrText(s: string): unknown {
  try {
    return JSON.parse(s) as unknown;
  } catch {
    return s;
  }
}
