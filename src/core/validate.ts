/**
 * Validation of options declarations (src/core/options.ts) with ajv: every problem as `path: message`, the path
 * as a user wrote it (`providers.llm.baseUrl`, `sip.allowFrom[1]`), an unknown key with the nearest known one.
 */
import { isIP } from 'node:net';
import { Ajv, type ErrorObject, type ValidateFunction } from 'ajv';

/** `a.b.c/24` or a bare address. */
function isCidr(value: string): boolean {
  const [address, prefix, ...rest] = value.trim().split('/');
  const family = isIP(address);
  if (family === 0 || rest.length > 0) return false;
  if (prefix === undefined) return true;
  const bits = Number(prefix);
  return /^\d+$/.test(prefix) && bits <= (family === 4 ? 32 : 128);
}

const ajv = new Ajv({ allErrors: true, discriminator: true, strict: false, verbose: true });
ajv.addFormat('ip', (s: string) => isIP(s) !== 0);
ajv.addFormat('cidr', isCidr);

const compiled = new WeakMap<object, ValidateFunction>();

function validatorFor(schema: object): ValidateFunction {
  let validate = compiled.get(schema);
  if (!validate) {
    validate = ajv.compile(schema);
    compiled.set(schema, validate);
  }
  return validate;
}

/** `providers.llm.baseUrl`-style path of an ajv error, under `prefix`. */
function errorPath(e: ErrorObject, prefix: string): string {
  const parts = [
    ...(prefix ? [prefix] : []),
    ...e.instancePath
      .split('/')
      .slice(1)
      .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~')),
  ];
  if (e.keyword === 'required') parts.push(String((e.params as { missingProperty: string }).missingProperty));
  if (e.keyword === 'additionalProperties') parts.push(String((e.params as { additionalProperty: string }).additionalProperty));
  return parts.reduce((acc, p) => (/^\d+$/.test(p) ? `${acc}[${p}]` : acc ? `${acc}.${p}` : p), '') || '(top level)';
}

/** Edit distance, for "did you mean" (keys are short: the quadratic table is nothing). */
function distance(a: string, b: string): number {
  const x = a.toLowerCase();
  const y = b.toLowerCase();
  let prev = Array.from({ length: y.length + 1 }, (_, j) => j);
  for (let i = 1; i <= x.length; i++) {
    const row = [i];
    for (let j = 1; j <= y.length; j++) row.push(Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (x[i - 1] === y[j - 1] ? 0 : 1)));
    prev = row;
  }
  return prev[y.length];
}

/** The known key closest to a misspelt one, when it is close enough to be the one meant. */
export function nearestKey(key: string, known: readonly string[]): string | undefined {
  let best: { key: string; d: number } | undefined;
  for (const candidate of known) {
    const d = distance(key, candidate);
    if (!best || d < best.d) best = { key: candidate, d };
  }
  return best && best.d <= Math.max(2, Math.floor(key.length / 3)) ? best.key : undefined;
}

function describe(e: ErrorObject): string {
  switch (e.keyword) {
    case 'required':
      return 'is required';
    case 'additionalProperties': {
      const known = Object.keys((e.parentSchema as { properties?: Record<string, unknown> } | undefined)?.properties ?? {});
      const near = nearestKey(String((e.params as { additionalProperty: string }).additionalProperty), known);
      return `is not a known setting (check the spelling)${near ? `: did you mean "${near}"?` : ''}`;
    }
    case 'enum':
      return `must be one of ${(e.params as { allowedValues: unknown[] }).allowedValues.map((v) => JSON.stringify(v)).join(', ')}`;
    case 'type': {
      const t = String((e.params as { type: string }).type);
      const article: Record<string, string> = { integer: 'an integer', object: 'an object', array: 'an array', boolean: 'true or false', string: 'a string', number: 'a number' };
      return `must be ${article[t] ?? t}`;
    }
    case 'const':
      return `must be ${JSON.stringify((e.params as { allowedValue: unknown }).allowedValue)}`;
    case 'format': {
      const format = (e.params as { format: string }).format;
      if (format === 'ip') return 'must be an IP address (e.g. "0.0.0.0")';
      if (format === 'cidr') return 'must be an IP address or CIDR (e.g. "10.0.0.0/8")';
      return `must be a ${format}`;
    }
    case 'discriminator': {
      const p = e.params as { error: string; tag: string; tagValue?: unknown };
      return p.error === 'mapping' ? `unknown provider ${JSON.stringify(p.tagValue)}` : 'must be a string naming the provider';
    }
    case 'pattern': {
      const pattern = (e.params as { pattern: string }).pattern;
      if (pattern === '^https?://') return 'must be an http:// or https:// URL';
      if (pattern === '^wss?://') return 'must be a ws:// or wss:// URL';
      if (pattern.startsWith('^[a-z]{2,3}')) return 'must be a language tag such as "en" or "fr-FR"';
      if (pattern === '^[0-9a-f]{64}$') return 'must be a SHA-256 hex digest (64 lower-case hex characters)';
      if (pattern === '^[A-Za-z0-9+/]{43}=$') return 'must be 32 random bytes in base64 (openssl rand -base64 32)';
      if (pattern.startsWith('^[sS][iI][pP]')) return 'must be a SIP URI such as "sip:desk@pbx.example.com"';
      return `must match ${pattern}`;
    }
    default:
      return e.message ?? e.keyword;
  }
}

/** The problems of `value` against `schema` (empty when valid), one `path: message` each, paths under `prefix`. */
export function schemaProblems(schema: object, value: unknown, prefix = ''): string[] {
  const validate = validatorFor(schema);
  if (validate(value)) return [];
  // With a discriminator the branch's own errors are precise; drop oneOf's summary noise.
  const lines = (validate.errors ?? []).filter((e) => e.keyword !== 'oneOf' && e.keyword !== 'if').map((e) => `${errorPath(e, prefix)}: ${describe(e)}`);
  return [...new Set(lines)];
}
