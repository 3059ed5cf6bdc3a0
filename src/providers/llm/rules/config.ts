/** Rules config: intents, forms (slots, prompts, confirmation), domain settings; validation with every problem's path. */
import { existsSync } from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fill, isRecord, placeholders } from '../../../core/template.js';

export { fill, isRecord, placeholders };
import { tokenize } from './matcher.js';
import { DEFAULT_MESSAGES, type LangList, type MessageKey } from './lexicon.js';
import { queueNames, validateHandover, type HandoverConfig } from '../../../integration/handover.js';
import { parameterNames, validateHttpTools, type HttpToolDefaults, type HttpToolSpec } from '../../../integration/http-tools.js';

// ---------------------------------------------------------------------------------------------
// Config

/** Text per language: `{ en: "...", fr: "..." }`. */
export type LangText = Record<string, string>;

export interface RuleToolSpec {
  name: string;
  /**
   * Constant values, or "{slot}" filled from the intent's form (or, for intents without slots, from the
   * utterance: {party_size}, {time}, {name}); absent values are omitted.
   */
  arguments?: Record<string, string | number | boolean>;
}

export type SlotType = 'number' | 'time' | 'date' | 'name' | 'digits' | 'values' | 'yesno';
export const SLOT_TYPES: readonly SlotType[] = ['number', 'time', 'date', 'name', 'digits', 'values', 'yesno'];

/** One field of a form (VoiceXML <field>, a Rasa form slot, a Dialogflow CX parameter). */
export interface SlotSpec {
  name: string;
  type: SlotType;
  /** Default true: the form is not confirmed until it has a value. */
  required?: boolean;
  /** The question, per language. */
  prompt: LangText;
  /** Asked after an answer that gave no value (default: the prompt again). */
  reprompt?: LangText;
  /** Said when the value is out of range (number min/max, time outside opening hours, digit count). */
  invalid?: LangText;
  /** Masked in transcripts, events, records, logs and the LLM context; only the tool sees it. */
  sensitive?: boolean;
  /** number: allowed range; digits: allowed length. */
  min?: number;
  max?: number;
  /** values: canonical value → per-language synonyms. */
  values?: Record<string, LangList>;
}

export interface RuleIntent {
  name: string;
  /** Added to the score: breaks ties between intents (e.g. "thanks, bye" must hang up). */
  priority?: number;
  /** Example phrases per language; matched by fuzzy token overlap, not exact strings. */
  phrases: Record<string, string[]>;
  /** Single strong cue words per language; a trailing `*` matches any word with that prefix. */
  keywords?: Record<string, string[]>;
  /** Spoken before the tool call (e.g. the farewell before end_call). */
  say?: LangText;
  tool?: RuleToolSpec;
  /**
   * The reply. Without a tool: spoken directly. With a tool: spoken after the tool result, may use
   * `{args.x}`, `{result.x}` and, for a form, `{slot}`. A list gives variants: the first whose
   * placeholders all resolve wins. An empty string means nothing more to say.
   */
  reply: Record<string, string | string[]>;
  /** A form: the values to collect before the tool runs, asked one at a time. */
  slots?: SlotSpec[];
  /**
   * Read-back asked before the tool runs ("A table for {party_size} at {time}. Shall I book it?"). Without it
   * the tool runs as soon as the slots are filled (a verification that changes nothing).
   */
  confirm?: LangText;
  /** Another form intent that must have succeeded earlier in the call (caller verification). */
  requires?: string;
  /** A form whose tool result has `"ok": false` (wrong PIN): said before asking again. */
  failure?: LangText;
  /** Said when the tool failed (an operator's service down or too slow), before the read-back is asked again (default: toolError). */
  error?: LangText;
  /** Hang-up and transfer intents: ask "did you want to…?" when recognition was not confident. */
  confirmIfUnsure?: 'confirmEnd' | 'confirmTransfer';
  /**
   * A question about the dialogue's state ("what did I book?"): the reply is filled from this form
   * intent's current or last completed instance; `none` when there is none.
   */
  about?: string;
  none?: LangText;
}

export interface DomainConfig {
  /** "HH:MM" each: resolves "7" to 19:00 and bounds time slots. */
  openingHours?: { open: string; close: string };
  /** IANA zone for "today", "tomorrow" (default $TZ, else the system zone). */
  timezone?: string;
}

export interface RulesConfig {
  version: 1;
  languages: string[];
  defaultLanguage: string;
  /** Minimum score (about 0..1) for an intent to win; default 0.55. */
  threshold?: number;
  /** Spoken when the history has no user turn yet (call opening). Defaults to the fallback. */
  welcome?: LangText;
  fallback: LangText;
  /**
   * Spoken when the caller clearly spoke but said nothing the agent understands (speech outside every grammar):
   * an honest list of what it can do, instead of a guess. Defaults to the fallback.
   */
  outOfDomain?: LangText;
  /** Spoken when a tool result carries an error. */
  toolError: LangText;
  /** Spoken after a tool result that no intent owns. */
  toolDone: LangText;
  intents: RuleIntent[];
  domain?: DomainConfig;
  /** Names the recogniser should know (a name slot's spoken forms). */
  names?: string[];
  /** Failed answers to one question before the caller is handed to a person (default 3). */
  maxAttempts?: number;
  /** Below this recognition confidence a hang-up or transfer is confirmed first (default 0.5). */
  minConfidence?: number;
  /** Override the engine's own lines (see lexicon.ts DEFAULT_MESSAGES). */
  messages?: Partial<Record<MessageKey, LangText>>;
  /** Extra yes/no/cancel/correction words per language. */
  lexicon?: { yes?: LangList; no?: LangList; cancel?: LangList; correction?: LangList };
  /** HTTP tools that call the operator's systems (src/integration/http-tools.ts); a form's tool may name one. */
  tools?: HttpToolSpec[];
  toolDefaults?: HttpToolDefaults;
  /** Transfer queues and when a person is offered (src/integration/handover.ts). */
  handover?: HandoverConfig;
}

export class RulesConfigError extends Error {
  override readonly name = 'RulesConfigError';
}

/** Slots an intent without a form may use in tool arguments (read from the one utterance). */
export const UTTERANCE_SLOTS = ['party_size', 'time', 'name'] as const;

/** Validates untrusted JSON; throws RulesConfigError listing every problem with its path. */
export function validateRulesConfig(raw: unknown, source = 'rules'): RulesConfig {
  const errors: string[] = [];
  const err = (where: string, msg: string): void => {
    errors.push(`${where}: ${msg}`);
  };
  if (!isRecord(raw)) throw new RulesConfigError(`${source}: expected a JSON object at the top level`);

  if (raw.version !== 1) err('version', `must be 1 (got ${JSON.stringify(raw.version)})`);
  const languages: string[] = [];
  if (Array.isArray(raw.languages) && raw.languages.length > 0 && raw.languages.every((l) => typeof l === 'string' && l !== '')) {
    languages.push(...(raw.languages as string[]));
  } else {
    err('languages', 'must be a non-empty array of language codes');
  }
  if (typeof raw.defaultLanguage !== 'string' || !languages.includes(raw.defaultLanguage)) {
    err('defaultLanguage', `must be one of languages [${languages.join(', ')}]`);
  }
  if (raw.threshold !== undefined && (typeof raw.threshold !== 'number' || raw.threshold <= 0 || raw.threshold > 2)) {
    err('threshold', 'must be a number in (0, 2]');
  }

  const checkLangText = (where: string, v: unknown, required: boolean, allowEmpty: boolean): void => {
    if (v === undefined && !required) return;
    if (!isRecord(v)) return err(where, 'must be an object of language → text');
    for (const lang of languages) {
      const t = v[lang];
      if (typeof t !== 'string' || (!allowEmpty && t.trim() === '')) err(`${where}.${lang}`, 'missing or empty text');
    }
  };
  checkLangText('welcome', raw.welcome, false, false);
  checkLangText('fallback', raw.fallback, true, false);
  checkLangText('outOfDomain', raw.outOfDomain, false, false);
  checkLangText('toolError', raw.toolError, true, false);
  checkLangText('toolDone', raw.toolDone, true, false);

  if (!Array.isArray(raw.intents) || raw.intents.length === 0) {
    err('intents', 'must be a non-empty array');
  } else {
    const names = new Set<string>();
    raw.intents.forEach((intent: unknown, i: number) => {
      const at = `intents[${i}]`;
      if (!isRecord(intent)) return err(at, 'must be an object');
      const where = typeof intent.name === 'string' ? `${at} (${intent.name})` : at;
      if (typeof intent.name !== 'string' || intent.name === '') err(at, 'name must be a non-empty string');
      else if (names.has(intent.name)) err(where, 'duplicate intent name');
      else names.add(intent.name);
      if (intent.priority !== undefined && typeof intent.priority !== 'number') err(`${where}.priority`, 'must be a number');

      let cueCount = 0;
      for (const key of ['phrases', 'keywords'] as const) {
        const v = intent[key];
        if (v === undefined && key === 'keywords') continue;
        if (!isRecord(v)) {
          err(`${where}.${key}`, 'must be an object of language → array of strings');
          continue;
        }
        for (const [lang, list] of Object.entries(v)) {
          if (!languages.includes(lang)) err(`${where}.${key}.${lang}`, `language not in languages [${languages.join(', ')}]`);
          if (!Array.isArray(list) || !list.every((s) => typeof s === 'string' && tokenize(s).length > 0)) {
            err(`${where}.${key}.${lang}`, 'must be an array of non-empty strings');
          } else cueCount += list.length;
        }
      }
      if (cueCount === 0) err(where, 'needs at least one phrase or keyword');

      let tool: RuleToolSpec | undefined;
      if (intent.tool !== undefined) {
        const t = intent.tool;
        if (!isRecord(t) || typeof t.name !== 'string' || t.name === '') {
          err(`${where}.tool`, 'must be { name: string, arguments?: object }');
        } else if (t.arguments !== undefined && !isRecord(t.arguments)) {
          err(`${where}.tool.arguments`, 'must be an object');
        } else {
          tool = t as unknown as RuleToolSpec;
          for (const [k, v] of Object.entries(tool.arguments ?? {})) {
            if (!['string', 'number', 'boolean'].includes(typeof v)) {
              err(`${where}.tool.arguments.${k}`, 'must be a string, number or boolean');
            } else if (typeof v === 'string') {
              const known: readonly string[] = Array.isArray(intent.slots)
                ? intent.slots.flatMap((sl: unknown) => (isRecord(sl) && typeof sl.name === 'string' ? [sl.name] : []))
                : UTTERANCE_SLOTS;
              for (const ph of placeholders(v)) {
                if (!known.includes(ph)) {
                  err(`${where}.tool.arguments.${k}`, `unknown slot {${ph}} (known: ${known.join(', ')})`);
                }
              }
            }
          }
        }
      }

      if (intent.slots !== undefined) {
        if (!Array.isArray(intent.slots) || intent.slots.length === 0) err(`${where}.slots`, 'must be a non-empty array');
        else {
          if (!intent.tool) err(`${where}.slots`, 'a form needs a tool to call once confirmed');
          const slotNames = new Set<string>();
          intent.slots.forEach((slot: unknown, k: number) => {
            const at2 = `${where}.slots[${k}]`;
            if (!isRecord(slot) || typeof slot.name !== 'string' || !/^[a-z][a-z0-9_]*$/.test(slot.name)) {
              return err(at2, 'needs a name of lowercase letters, digits and _');
            }
            if (slotNames.has(slot.name)) err(at2, `duplicate slot ${slot.name}`);
            slotNames.add(slot.name);
            if (!SLOT_TYPES.includes(slot.type as SlotType)) err(`${at2}.type`, `must be one of ${SLOT_TYPES.join(', ')}`);
            checkLangText(`${at2}.prompt`, slot.prompt, true, false);
            checkLangText(`${at2}.reprompt`, slot.reprompt, false, false);
            checkLangText(`${at2}.invalid`, slot.invalid, false, false);
            if (slot.type === 'values') {
              if (!isRecord(slot.values) || Object.keys(slot.values).length === 0) err(`${at2}.values`, 'a values slot needs values');
            }
            for (const key of ['min', 'max'] as const) {
              if (slot[key] !== undefined && typeof slot[key] !== 'number') err(`${at2}.${key}`, 'must be a number');
            }
          });
        }
        checkLangText(`${where}.confirm`, intent.confirm, false, false);
      } else if (intent.confirm !== undefined) err(`${where}.confirm`, 'only makes sense with slots');
      checkLangText(`${where}.failure`, intent.failure, false, false);
      checkLangText(`${where}.error`, intent.error, false, false);
      checkLangText(`${where}.none`, intent.none, false, false);
      if (intent.confirmIfUnsure !== undefined && intent.confirmIfUnsure !== 'confirmEnd' && intent.confirmIfUnsure !== 'confirmTransfer') {
        err(`${where}.confirmIfUnsure`, 'must be "confirmEnd" or "confirmTransfer"');
      }
      if (intent.say !== undefined) {
        if (intent.tool === undefined) err(`${where}.say`, 'only makes sense with a tool');
        checkLangText(`${where}.say`, intent.say, true, false);
      }
      if (!isRecord(intent.reply)) {
        err(`${where}.reply`, 'must be an object of language → text or list of variants');
      } else {
        for (const lang of languages) {
          const r = intent.reply[lang];
          const variants = typeof r === 'string' ? [r] : Array.isArray(r) ? r : undefined;
          if (!variants || variants.length === 0 || !variants.every((s) => typeof s === 'string')) {
            err(`${where}.reply.${lang}`, 'missing (a reply is needed for every language)');
            continue;
          }
          if (!intent.tool && variants.some((s) => (s as string).trim() === '')) {
            err(`${where}.reply.${lang}`, 'empty reply is only allowed for intents with a tool');
          }
          for (const s of variants as string[]) {
            for (const ph of placeholders(s)) {
              const slotRef = Array.isArray(intent.slots) && intent.slots.some((sl: unknown) => isRecord(sl) && sl.name === ph);
              const aboutRef = typeof intent.about === 'string';
              if (slotRef || aboutRef) continue;
              if (!intent.tool || !/^(args|result)(\.[A-Za-z0-9_]+)+$/.test(ph)) {
                err(`${where}.reply.${lang}`, `placeholder {${ph}} not allowed (use {args.x} or {result.x} with a tool)`);
              }
            }
          }
        }
      }
    });
  }

  if (Array.isArray(raw.intents)) {
    const forms = new Set(raw.intents.flatMap((it: unknown) => (isRecord(it) && Array.isArray(it.slots) && typeof it.name === 'string' ? [it.name] : [])));
    raw.intents.forEach((it: unknown, i: number) => {
      if (!isRecord(it)) return;
      for (const key of ['requires', 'about'] as const) {
        if (it[key] !== undefined && (typeof it[key] !== 'string' || !forms.has(it[key] as string))) {
          err(`intents[${i}] (${String(it.name)}).${key}`, `must name a form intent (one with slots): ${[...forms].join(', ')}`);
        }
      }
    });
  }
  if (raw.domain !== undefined) {
    const d = raw.domain;
    if (!isRecord(d)) err('domain', 'must be an object');
    else {
      if (d.openingHours !== undefined) {
        const h = d.openingHours;
        const ok = isRecord(h) && typeof h.open === 'string' && typeof h.close === 'string' && /^\d{1,2}:\d{2}$/.test(h.open) && /^\d{1,2}:\d{2}$/.test(h.close);
        if (!ok) err('domain.openingHours', 'must be { open: "HH:MM", close: "HH:MM" }');
      }
      if (d.timezone !== undefined && typeof d.timezone !== 'string') err('domain.timezone', 'must be an IANA zone name');
    }
  }
  if (raw.names !== undefined && !(Array.isArray(raw.names) && raw.names.every((n) => typeof n === 'string'))) err('names', 'must be an array of strings');
  if (raw.maxAttempts !== undefined && !(typeof raw.maxAttempts === 'number' && raw.maxAttempts >= 1)) err('maxAttempts', 'must be a number ≥ 1');
  if (raw.minConfidence !== undefined && !(typeof raw.minConfidence === 'number' && raw.minConfidence >= 0 && raw.minConfidence <= 1)) {
    err('minConfidence', 'must be a number in [0, 1]');
  }
  if (raw.messages !== undefined && !isRecord(raw.messages)) err('messages', 'must be an object of message → language → text');
  else {
    const given = isRecord(raw.messages) ? raw.messages : {};
    for (const [k, v] of Object.entries(given)) {
      if (!(k in DEFAULT_MESSAGES)) err(`messages.${k}`, `unknown message (known: ${Object.keys(DEFAULT_MESSAGES).join(', ')})`);
      else if (!isRecord(v)) err(`messages.${k}`, 'must be an object of language → text');
    }
    // The engine's own lines ship in en/fr/de/es/it; another language must bring its own.
    for (const [k, defaults] of Object.entries(DEFAULT_MESSAGES)) {
      for (const lang of languages) {
        const own = isRecord(given[k]) ? (given[k] as Record<string, unknown>)[lang] : undefined;
        if (defaults[lang] === undefined && (typeof own !== 'string' || own.trim() === '')) err(`messages.${k}.${lang}`, 'missing (no built-in text in this language)');
      }
    }
  }

  validateHttpTools(raw.tools, raw.toolDefaults, err);
  if (Array.isArray(raw.tools) && Array.isArray(raw.intents)) checkFormsAgainstTools(raw.intents, raw.tools as HttpToolSpec[], err);
  validateHandover(raw.handover, err);
  if (Array.isArray(raw.intents)) {
    // An intent that names its queue must name one the file configures.
    const queues = queueNames(isRecord(raw.handover) ? (raw.handover as HandoverConfig) : undefined);
    raw.intents.forEach((it: unknown, i: number) => {
      const tool = isRecord(it) && isRecord(it.tool) ? it.tool : undefined;
      const queue = tool?.name === 'transfer_to_human' && isRecord(tool.arguments) ? tool.arguments.queue : undefined;
      if (queue !== undefined && (typeof queue !== 'string' || !queues.includes(queue))) err(`intents[${i}].tool.arguments.queue`, `unknown queue (known: ${queues.join(', ')})`);
    });
  }

  if (errors.length > 0) {
    throw new RulesConfigError(`${source}: invalid rules config:\n  - ${errors.join('\n  - ')}`);
  }
  return raw as unknown as RulesConfig;
}

/**
 * A form whose tool is an HTTP tool sends its slots as the tool's parameters: without `tool.arguments`, every slot
 * named like a parameter is sent as `{slot}`; given arguments must name parameters, and every required parameter
 * must be filled (by an argument or the tool's `send`).
 */
function checkFormsAgainstTools(intents: unknown[], tools: HttpToolSpec[], err: (where: string, msg: string) => void): void {
  intents.forEach((intent: unknown, i: number) => {
    if (!isRecord(intent) || !isRecord(intent.tool)) return;
    const spec = tools.find((t) => isRecord(t) && t.name === (intent.tool as Record<string, unknown>).name);
    if (!spec || !isRecord(spec.parameters)) return;
    const where = `intents[${i}] (${String(intent.name)}).tool`;
    const params = parameterNames(spec);
    const tool = intent.tool as { name: string; arguments?: Record<string, unknown> };
    if (tool.arguments === undefined) {
      const slots = Array.isArray(intent.slots) ? intent.slots.flatMap((sl: unknown) => (isRecord(sl) && typeof sl.name === 'string' ? [sl.name] : [])) : [];
      tool.arguments = Object.fromEntries(slots.filter((s) => params.includes(s)).map((s) => [s, `{${s}}`]));
    }
    for (const k of Object.keys(tool.arguments)) if (!params.includes(k)) err(`${where}.arguments.${k}`, `not a parameter of HTTP tool ${spec.name} (${params.join(', ')})`);
    const required = Array.isArray(spec.parameters.required) ? (spec.parameters.required as string[]) : [];
    for (const r of required) {
      if (tool.arguments[r] === undefined && spec.send?.[r] === undefined) err(where, `required parameter ${r} of HTTP tool ${spec.name} is not filled (no slot, argument or send field of that name)`);
    }
  });
}

/** Finds config/agent-rules.json walking up from this module (works from src/ and from dist/). */
export function defaultRulesPath(): string {
  let dir = path.dirname(fileURLToPath(import.meta.url));
  for (;;) {
    const candidate = path.join(dir, 'config', 'agent-rules.json');
    if (existsSync(candidate)) return candidate;
    const parent = path.dirname(dir);
    if (parent === dir) return path.resolve('config', 'agent-rules.json');
    dir = parent;
  }
}

export function pickVariant(reply: string | string[] | undefined, vars: Record<string, unknown>): string | undefined {
  if (reply === undefined) return undefined;
  const variants = typeof reply === 'string' ? [reply] : reply;
  for (const v of variants) {
    const filled = fill(v, vars);
    if (filled !== undefined) return filled;
  }
  return undefined;
}
