/**
 * `{name}` / `{a.b}` templates over plain JSON values: the agent's reply lines, and the headers and fields of
 * the HTTP tools that call the operator's systems. One implementation, so both read placeholders alike.
 */

import { isRecord } from './guards.js';

export { isRecord };

/** The value at a dotted path (`result.reference`), undefined where any step is missing. */
export function valueAt(root: unknown, dottedPath: string): unknown {
  let v: unknown = root;
  for (const part of dottedPath.split('.')) v = isRecord(v) ? v[part] : undefined;
  return v;
}

/** The placeholder names in a template, in order. */
export function placeholders(template: string): string[] {
  return [...template.matchAll(/\{([^{}]+)\}/g)].map((m) => m[1]);
}

/** Fills `{x}` / `{a.b}` from vars; undefined when any placeholder has no (scalar, non-empty) value. */
export function fill(template: string, vars: Record<string, unknown>): string | undefined {
  let missing = false;
  const out = template.replace(/\{([^{}]+)\}/g, (_, key: string) => {
    const v = valueAt(vars, key);
    if (v === undefined || v === null || v === '' || typeof v === 'object') {
      missing = true;
      return '';
    }
    return String(v);
  });
  return missing ? undefined : out;
}
