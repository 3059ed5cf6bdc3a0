/** A form's slot values: read from an utterance, said back in templates, passed to the tool. */
import { fill, type RuleIntent, type SlotSpec } from './config.js';
import { hasPhrase, yesNo } from './lexicon.js';
import type { EngineContext, SlotValue } from './state.js';
import { findCount, findDate, findDigits, findName, findTime, formatClock, renderValue, type OpeningHours } from './values.js';

/** Values for the form's slots found in the utterance; the asked slot also takes a bare answer ("four"). */
export function extractValues(
  ctx: EngineContext, intent: RuleIntent, ws: string[], text: string, lang: string, asking: string | undefined, keypad: boolean,
  /** The words matched an intent ("hello", "thank you"): not a bare name. */
  matchedIntent = false,
): { values: Record<string, SlotValue>; invalid?: string } {
  const values: Record<string, SlotValue> = {};
  let invalid: string | undefined;
  const slots = intent.slots ?? [];
  const time = slots.find((s) => s.type === 'time');
  const timeMatch = time ? findTime(ws, { bare: asking === time.name, hours: ctx.hours }) : undefined;
  for (const slot of slots) {
    const bare = asking === slot.name;
    let v: SlotValue | undefined;
    let bad = false;
    switch (slot.type) {
      case 'time':
        if (timeMatch) {
          v = formatClock(timeMatch.minutes);
          const h = ctx.hours;
          if (h && (timeMatch.minutes < h.open || timeMatch.minutes >= h.close)) bad = true;
        }
        break;
      case 'number': {
        const n = findCount(ws, { bare, skip: timeMatch?.used });
        if (n !== undefined) {
          v = n;
          if ((slot.min !== undefined && n < slot.min) || (slot.max !== undefined && n > slot.max)) bad = true;
        }
        break;
      }
      case 'date':
        v = findDate(text, lang, ctx.now, ctx.timeZone);
        break;
      case 'name':
        v = findName(text, { bare: bare && !matchedIntent, known: ctx.config.names });
        break;
      case 'digits':
        // Digits only when asked (or typed with nothing asked): a number in passing is not a PIN.
        if (bare || (keypad && asking === undefined)) {
          const d = findDigits(ws);
          if (d !== undefined) {
            v = d;
            if ((slot.min !== undefined && d.length < slot.min) || (slot.max !== undefined && d.length > slot.max)) bad = true;
          }
        }
        break;
      case 'values':
        v = findValue(slot, ws, lang);
        break;
      case 'yesno':
        if (bare) {
          const yn = yesNo(ws, lang, ctx.lexicon);
          if (yn) v = yn === 'yes';
        }
        break;
    }
    if (v === undefined) continue;
    if (bad) {
      // Said, but not allowed (a time after closing): say why, whatever was asked.
      invalid = slot.invalid?.[lang] ?? ctx.config.fallback[lang];
      continue;
    }
    values[slot.name] = v;
  }
  return invalid !== undefined ? { values, invalid } : { values };
}

function findValue(slot: SlotSpec, ws: readonly string[], lang: string): string | undefined {
  for (const [canonical, perLang] of Object.entries(slot.values ?? {})) {
    if (hasPhrase(ws, [canonical, ...(perLang[lang] ?? [])])) return canonical;
  }
  for (const [canonical, perLang] of Object.entries(slot.values ?? {})) {
    if (hasPhrase(ws, Object.values(perLang).flat())) return canonical;
  }
  return undefined;
}

/** Template variables: each slot as the agent says it (sensitive ones masked). */
export function slotVars(ctx: EngineContext, intent: RuleIntent, slots: Record<string, SlotValue>, lang: string): Record<string, unknown> {
  const vars: Record<string, unknown> = {};
  for (const spec of intent.slots ?? []) {
    const v = slots[spec.name];
    if (v === undefined) continue;
    vars[spec.name] = spec.sensitive ? '****' : renderValue(spec.type, v, lang);
  }
  return vars;
}

/** The tool's arguments: a whole "{slot}" keeps its type; legacy intents read party size, time, name from the utterance. */
export function toolArgs(intent: RuleIntent, slots: Record<string, SlotValue>, ws: string[], text: string, ctx: EngineContext): Record<string, SlotValue> {
  const source: Record<string, SlotValue> = intent.slots ? slots : utteranceSlots(ws, text, ctx.hours);
  const args: Record<string, SlotValue> = {};
  for (const [key, value] of Object.entries(intent.tool?.arguments ?? {})) {
    if (typeof value !== 'string') {
      args[key] = value;
      continue;
    }
    const single = /^\{(\w+)\}$/.exec(value);
    if (single) {
      const v = source[single[1]];
      if (v !== undefined) args[key] = v;
      continue;
    }
    const filled = fill(value, source);
    if (filled !== undefined) args[key] = filled;
  }
  return args;
}

/** Party size, time and name from one utterance (intents without a form). */
export function utteranceSlots(ws: string[], text: string, hours?: OpeningHours): Record<string, SlotValue> {
  const out: Record<string, SlotValue> = {};
  const t = findTime(ws, { hours });
  if (t) out.time = formatClock(t.minutes);
  const n = findCount(ws, { skip: t?.used });
  if (n !== undefined && n >= 1) out.party_size = n;
  const name = findName(text);
  if (name) out.name = name;
  return out;
}
