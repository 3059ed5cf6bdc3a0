/**
 * Options declarations: one value per provider or transport from which its TypeScript type (Static / Resolved),
 * its validation (the value is plain JSON Schema, compiled by ajv in src/config-schema.ts) and its defaults
 * (defaultsOf) all derive, so the three cannot drift apart. The API follows @sinclair/typebox (what fastify
 * recommends for the same job) closely enough that swapping it in later is mechanical.
 */

declare const STATIC: unique symbol;
declare const RESOLVED: unique symbol;
declare const DEFAULTS: unique symbol;
declare const MODIFIER: unique symbol;

/** A JSON Schema whose validated values have type T (the type lives only at compile time). */
export type Schema<T = unknown> = { readonly [STATIC]: T; readonly [keyword: string]: unknown };
export type Static<S> = S extends { readonly [STATIC]: infer T } ? T : never;

type Optional = { readonly [MODIFIER]: 'optional' };
type Defaulted = { readonly [MODIFIER]: 'default' };
type Simplify<T> = { [K in keyof T]: T[K] } & {};
type Props = Record<string, Schema>;

/** What a user may write: optional and defaulted keys may be left out. */
type InputOf<P extends Props> = Simplify<
  { [K in keyof P as P[K] extends Optional | Defaulted ? never : K]: Static<P[K]> } & {
    [K in keyof P as P[K] extends Optional | Defaulted ? K : never]?: Static<P[K]>;
  }
>;
/** After the defaults are merged in: defaulted keys are always there. */
type ResolvedOf<P extends Props> = Simplify<
  { [K in keyof P as P[K] extends Optional ? never : K]: Static<P[K]> } & { [K in keyof P as P[K] extends Optional ? K : never]?: Static<P[K]> }
>;
type DefaultsOf<P extends Props> = Simplify<{ [K in keyof P as P[K] extends Defaulted ? K : never]: Static<P[K]> }>;

export type ObjectSchema<P extends Props> = Schema<InputOf<P>> & {
  readonly properties: P;
  readonly [RESOLVED]: ResolvedOf<P>;
  readonly [DEFAULTS]: DefaultsOf<P>;
};
/** The type of an object's values once its declared defaults are applied (a config section after the merge). */
export type Resolved<S> = S extends { readonly [RESOLVED]: infer T } ? T : never;

/** Runtime marks (a WeakSet keeps the schema objects plain JSON for ajv). */
const optionals = new WeakSet<object>();

type Keywords = Record<string, unknown>;
const schema = <T>(s: Keywords): Schema<T> => s as Schema<T>;
const range = (minimum?: number, maximum?: number): Keywords => ({
  ...(minimum !== undefined ? { minimum } : {}),
  ...(maximum !== undefined ? { maximum } : {}),
});

export const t = {
  string: (extra: Keywords = {}): Schema<string> => schema({ type: 'string', ...extra }),
  /** A non-empty string: paths, names, models. */
  text: (extra: Keywords = {}): Schema<string> => schema({ type: 'string', minLength: 1, ...extra }),
  integer: (minimum?: number, maximum?: number, extra: Keywords = {}): Schema<number> => schema({ type: 'integer', ...range(minimum, maximum), ...extra }),
  number: (minimum?: number, maximum?: number, extra: Keywords = {}): Schema<number> => schema({ type: 'number', ...range(minimum, maximum), ...extra }),
  boolean: (): Schema<boolean> => schema({ type: 'boolean' }),
  literal: <const V extends string | number | boolean>(value: V): Schema<V> => schema({ const: value }),
  enum: <const V extends readonly (string | number | boolean)[]>(values: V): Schema<V[number]> => schema({ enum: [...values] }),
  array: <S extends Schema>(items: S, extra: Keywords = {}): Schema<Static<S>[]> => schema({ type: 'array', items, ...extra }),
  /** An object of arbitrary keys (optionally constrained by `keys`) whose values all match `value`. */
  record: <S extends Schema>(value: S, keys?: Schema<string>, extra: Keywords = {}): Schema<Record<string, Static<S>>> =>
    schema({ type: 'object', ...(keys ? { propertyNames: keys } : {}), additionalProperties: value, ...extra }),
  /** `s` or null (null: an explicit "none", e.g. auth.generatedKeyFile). */
  nullable: <S extends Schema>(s: S): Schema<Static<S> | null> => schema({ ...s, type: [s.type, 'null'] }),
  anyOf: <const S extends readonly Schema[]>(...options: S): Schema<Static<S[number]>> => schema({ anyOf: [...options] }),
  /** Exactly one of `options` (errors name each option's own problem, not a summary). */
  oneOf: <const S extends readonly Schema[]>(...options: S): Schema<Static<S[number]>> => schema({ oneOf: [...options] }),
  /** A key that may be left out, with no default. */
  optional: <S extends Schema>(s: S): S & Optional => {
    const copy = { ...s };
    optionals.add(copy);
    return copy as S & Optional;
  },
  /** A key that may be left out; `value` applies then (and is what defaultsOf returns). */
  default: <S extends Schema>(s: S, value: Static<S>): S & Defaulted => {
    const copy = { ...s, default: value };
    optionals.add(copy);
    return copy as unknown as S & Defaulted;
  },
  /** A closed object: unknown keys are refused (typos are the commonest config bug). */
  object: <P extends Props>(properties: P, extra: Keywords = {}): ObjectSchema<P> => {
    const required = Object.entries(properties)
      .filter(([, s]) => !optionals.has(s))
      .map(([k]) => k);
    return schema({ type: 'object', properties, required, additionalProperties: false, ...extra }) as ObjectSchema<P>;
  },
};

/**
 * `T` with keys `K` optional again: defaulted in the config file, but code built without a config (a detector
 * in a test, a tool) may leave them out and gets the same behaviour.
 */
export type LeftOutOk<T, K extends keyof T> = Simplify<Omit<T, K> & Partial<Pick<T, K>>>;

/** The declared defaults of an object's keys. */
export function defaultsOf<P extends Props>(s: ObjectSchema<P>): DefaultsOf<P> {
  const out: Record<string, unknown> = {};
  for (const [key, value] of Object.entries(s.properties)) if ('default' in value) out[key] = structuredClone(value.default);
  return out as DefaultsOf<P>;
}

/** A provider block: `{ provider: name, ...that provider's options }`, typed as the union of the branches. */
export type ProviderUnion<B extends Record<string, ObjectSchema<Props>>> = Schema<
  { [K in keyof B & string]: Simplify<{ provider: K } & Static<B[K]>> }[keyof B & string]
> & { readonly branches: B };

/** `provider` picks the branch (ajv's discriminator keeps errors about that branch only). */
export function providerUnion<const B extends Record<string, ObjectSchema<Props>>>(branches: B): ProviderUnion<B> {
  const oneOf = Object.entries(branches).map(([name, branch]) => ({
    ...branch,
    properties: { provider: { const: name }, ...branch.properties },
    required: ['provider', ...((branch.required as string[] | undefined) ?? [])],
  }));
  return schema({ type: 'object', required: ['provider'], discriminator: { propertyName: 'provider' }, oneOf }) as ProviderUnion<B>;
}

/** Shapes several options declarations reuse. */
export const common = {
  langTag: t.string({ pattern: '^[a-z]{2,3}(-[A-Za-z0-9]+)*$' }),
  httpUrl: t.string({ pattern: '^https?://' }),
  wsUrl: t.string({ pattern: '^wss?://' }),
  texts: t.array(t.text()),
  ms: (minimum = 0, maximum?: number): Schema<number> => t.integer(minimum, maximum),
};
/** Per-language values, e.g. `{ "en": "…", "fr-FR": "…" }`. */
export const langMap = <S extends Schema>(value: S): Schema<Record<string, Static<S>>> => t.record(value, common.langTag);
