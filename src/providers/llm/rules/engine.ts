/**
 * The dialogue engine: a pure reducer over the conversation. Each turn the whole history (caller turns,
 * the agent's tool calls and their results) is replayed through `onUser` and `onToolResult`, so the state is never stored:
 * a preemptive reply the session throws away, an interrupted reply, or a stateless client that sends the
 * history again all give the same state. The form logic follows the VoiceXML form interpretation
 * algorithm: pick the first unfilled required slot, prompt for it, accept values for any slot at any
 * time (early filling and corrections), confirm, then call the tool exactly once per form instance.
 */
import { jsonOrText } from '../../../core/guards.js';
import { withoutHeardAs } from '../masking.js';
import type { ChatMessage, ToolCall } from '../types.js';
import { fill, isRecord, pickVariant, type RuleIntent, type RulesConfig } from './config.js';
import { hasPhrase, yesNo, type Lexicon, type MessageKey } from './lexicon.js';
import type { IntentMatcher } from './matcher.js';
import { extractValues, slotVars, toolArgs } from './slots.js';
import { ASK_BACK, OFFER_PERSON, type DialogueState, type EngineContext, type FormInstance, type Output, type SlotValue } from './state.js';
import { numbersToDigits, spokenNumber, words } from './values.js';

export type { DialogueState, EngineContext, FormInstance, Output, SlotValue } from './state.js';
export { extractValues, utteranceSlots } from './slots.js';

/** What the recogniser should expect next: "<intent>.<slot>" or "<intent>.confirm". */
export function expectationOf(state: DialogueState): string | undefined {
  if (state.pending) return `${state.pending}.confirm`;
  // Asked back inside a form, the caller may say yes or give the answer again: the form's question stays.
  if (state.doubt !== undefined && !state.form) return `${ASK_BACK}.confirm`;
  const form = state.form;
  if (!form || form.executing) return undefined;
  return `${form.intent}.${form.asking === 'change' ? 'confirm' : form.asking}`;
}

export function initialState(language: string): DialogueState {
  return { language, done: [], formCount: 0, handoffs: 0 };
}

/** The replay after one message: lets a later replay of the same conversation start from there. */
export interface ReplayPoint {
  /** The message before this one (identity): the point is valid only after the same prefix. */
  prev: ChatMessage | undefined;
  language: string;
  state: DialogueState;
  output?: Output;
  lastWasTool: boolean;
  userTurns: number;
}

/**
 * Replays the conversation; returns the final state and what to do now. `memo` (keyed by message object)
 * makes a call's replays incremental: the session's history only grows, so each turn replays one or two
 * messages instead of the whole call. It is a cache of this pure function, never a source of state.
 */
export function replay(
  ctx: EngineContext,
  messages: readonly ChatMessage[],
  language: string,
  memo?: WeakMap<ChatMessage, ReplayPoint>,
): { state: DialogueState; output?: Output } {
  let state = initialState(language);
  let output: Output | undefined;
  let lastWasTool = false;
  let userTurns = 0;
  let start = 0;
  if (memo) {
    for (let i = 0; i < messages.length; i++) {
      const point = memo.get(messages[i]);
      if (!point || point.prev !== messages[i - 1] || point.language !== language) break;
      ({ state, output, lastWasTool, userTurns } = point);
      start = i + 1;
    }
  }
  for (let i = start; i < messages.length; i++) {
    const m = messages[i];
    if (m.role === 'user') {
      userTurns++;
      ({ state, output } = onUser(ctx, state, m, userTurns));
      lastWasTool = false;
    } else if (m.role === 'assistant') {
      lastWasTool = false;
    } else if (m.role === 'tool') {
      const call = findCall(messages, i, m.toolCallId ?? '');
      const r = onToolResult(ctx, state, call, m.content);
      state = r.state;
      // Several results of one round: one reply that covers them all.
      output = lastWasTool && output ? { ...r.output, text: joinText(output.text, r.output.text) } : r.output;
      lastWasTool = true;
    }
    memo?.set(m, { prev: messages[i - 1], language, state, ...(output ? { output } : {}), lastWasTool, userTurns });
  }
  const last = messages[messages.length - 1];
  if (userTurns === 0) {
    const text = ctx.config.welcome?.[state.language] ?? ctx.config.fallback[state.language];
    return { state, output: { text, language: state.language } };
  }
  if (last?.role === 'assistant') {
    // Asked to answer again with no new words: repeat the open question, if any.
    const text = state.form ? question(ctx, state, state.form) : ctx.messages.anythingElse[state.language];
    return { state, output: withConfirms(ctx, state, { text, language: state.language }) };
  }
  return { state, output: output && withConfirms(ctx, state, output) };
}

/** The tool call a tool result answers: the nearest assistant turn before it that made it. */
function findCall(messages: readonly ChatMessage[], at: number, id: string): ToolCall | undefined {
  for (let i = at - 1; i >= 0; i--) {
    const call = messages[i].toolCalls?.find((c) => c.id === id);
    if (call) return call;
  }
  return undefined;
}

/** A turn that leaves the form at its read-back has asked for confirmation: say which call it confirms. */
function withConfirms(ctx: EngineContext, state: DialogueState, output: Output): Output {
  const form = state.form;
  if (!form || form.executing || form.asking !== 'confirm' || output.toolCall || output.confirms) return output;
  const intent = intentByName(ctx, form.intent);
  if (!intent?.tool) return output;
  return { ...output, confirms: { name: intent.tool.name, arguments: JSON.stringify(toolArgs(intent, form.slots, [], '', ctx)) } };
}

// ---------------------------------------------------------------------------------------------
// A caller turn

function onUser(ctx: EngineContext, prev: DialogueState, message: ChatMessage, turn: number): { state: DialogueState; output: Output } {
  // A proposed action whose result never came (its reply was discarded): it did not happen; ask again.
  let state = prev;
  if (prev.form?.executing) {
    const intent = intentByName(ctx, prev.form.intent);
    const lastSlot = intent?.slots?.[intent.slots.length - 1]?.name ?? 'confirm';
    state = { ...prev, form: { ...prev.form, executing: false, asking: intent?.confirm ? 'confirm' : lastSlot } };
  }
  const text = message.secret ?? message.content;
  const { language: lang, match } = turnLanguage(ctx, state, text, message.input?.language);
  state = { ...state, language: lang };
  const raw = words(text);
  const ws = numbersToDigits(raw, lang);
  const say = (t: string, s: DialogueState = state): { state: DialogueState; output: Output } => ({ state: s, output: { text: t, language: lang } });
  const msg = (key: MessageKey): string => ctx.messages[key][lang] ?? ctx.messages[key].en;

  // Every turn but one the agent understood none of ends a run of those.
  const missed = state.misunderstood ?? { run: 0, total: 0 };
  if (missed.run > 0) state = { ...state, misunderstood: { ...missed, run: 0 } };

  // "Did you say …?": a yes takes the doubtful words as said, a no is a turn not understood.
  if (state.doubt !== undefined) {
    const doubt = state.doubt;
    state = { ...state, doubt: undefined };
    const answer = yesNo(raw, lang, ctx.lexicon);
    if (answer === 'yes' && unsure(ctx, message)) return say(msg('yesOrNo'), { ...state, doubt });
    if (answer === 'yes') return onUser(ctx, state, { role: 'user', content: doubt, input: confirmedInput(message) }, turn);
    if (answer === 'no') {
      // Often the caller asked for something the agent does not do at all: outside a form, say what it does.
      const counted = misunderstood(state, missed);
      return say(state.form ? joinText(msg('misheard'), question(ctx, state, state.form)) : (ctx.config.outOfDomain?.[lang] ?? ctx.config.fallback[lang]), counted);
    }
    // Anything else is the caller saying it again, or something new: heard as usual.
  }

  // "Shall I put you through to a person?" (offered after turns not understood): yes transfers, no carries on.
  if (state.pending === OFFER_PERSON) {
    const answer = yesNo(raw, lang, ctx.lexicon);
    state = { ...state, pending: undefined };
    if (answer === 'yes' && !unsure(ctx, message)) return handoff(ctx, { ...state, misunderstood: { run: 0, total: 0 } }, lang, 'puttingThrough', OFFER_ARGS);
    if (answer === 'no') return say(msg('carryOn'), { ...state, misunderstood: { run: 0, total: 0 } });
    // Anything else is a new request: answered as usual.
  }

  // An unsure hang-up or transfer waits for its yes.
  if (state.pending) {
    const intent = intentByName(ctx, state.pending);
    const answer = yesNo(raw, lang, ctx.lexicon);
    // A yes the recogniser was unsure of does not end the call either: ask again.
    if (intent?.confirmIfUnsure && answer === 'yes' && unsure(ctx, message)) {
      return { state, output: { text: msg(intent.confirmIfUnsure), language: lang, confirms: { name: intent.tool?.name ?? intent.name, arguments: '{}' } } };
    }
    state = { ...state, pending: undefined };
    if (intent && answer === 'yes') return runIntent(ctx, state, intent, ws, text, lang, turn);
    if (answer === 'no') return say(joinText(msg('notNow'), state.form ? question(ctx, state, state.form) : msg('anythingElse')));
  }

  const doubtful = askBack(ctx, state, message, turn);
  if (doubtful) return doubtful;

  if (hasPhrase(raw, ctx.lexicon.cancel[lang]) || hasPhraseAnyLanguage(raw, ctx.lexicon.cancel)) {
    if (!state.form) return say(msg('nothingToCancel'));
    return say(msg('cancelled'), { ...state, form: undefined });
  }

  const form = state.form;
  if (form) {
    const intent = intentByName(ctx, form.intent);
    if (intent) return continueForm(ctx, state, form, intent, message, ws, raw, text, lang, match, turn);
  }

  if (!match) {
    // A bare yes/no with nothing open is not a misunderstanding.
    if (yesNo(raw, lang, ctx.lexicon)) return say(msg('anythingElse'));
    // Speech the recogniser could fit to nothing the agent knows, or only doubtfully to words that mean nothing
    // here (off-topic speech forced onto the nearest sentence): say honestly what the agent can do.
    const counted = misunderstood(state, missed);
    if (offerDue(ctx, counted)) {
      return { state: { ...counted, pending: OFFER_PERSON }, output: { text: msg('offerPerson'), language: lang, confirms: { name: 'transfer_to_human', arguments: OFFER_ARGS } } };
    }
    if (unsure(ctx, message)) return say(ctx.config.outOfDomain?.[lang] ?? ctx.config.fallback[lang], counted);
    return say(ctx.config.fallback[lang], counted);
  }
  const intent = match.intent;
  if (intent.confirmIfUnsure && unsure(ctx, message)) {
    return {
      state: { ...state, pending: intent.name },
      output: { text: msg(intent.confirmIfUnsure), language: lang, confirms: { name: intent.tool?.name ?? intent.name, arguments: JSON.stringify(toolArgs(intent, {}, ws, text, ctx)) } },
    };
  }
  return runIntent(ctx, state, intent, ws, text, lang, turn);
}

/**
 * Words the recogniser heard only doubtfully (`input.heardAs`, just under its confidence floor) are asked back —
 * "Did you say: for four people?" — when, said for sure, they would have been understood; never for a yes/no
 * question already open, a read-back, or a sensitive answer, and never acted on before the caller's yes.
 */
function askBack(ctx: EngineContext, state: DialogueState, message: ChatMessage, turn: number): { state: DialogueState; output: Output } | undefined {
  const heard = message.input?.heardAs;
  if (!heard || (message.secret ?? message.content).trim() !== '' || state.pending) return undefined;
  const form = state.form;
  if (form && (form.asking === 'confirm' || form.asking === 'change' || isSensitiveSlot(ctx.config, form.intent, form.asking))) return undefined;
  const trial = onUser(ctx, state, { role: 'user', content: heard.text, input: confirmedInput(message) }, turn);
  if ((trial.state.notUnderstood ?? 0) > (state.notUnderstood ?? 0) || trial.state.pending === OFFER_PERSON) return undefined;
  const text = fill(ctx.messages.askBack[state.language] ?? ctx.messages.askBack.en, { text: heard.text }) ?? heard.text;
  return { state: { ...state, doubt: heard.text }, output: { text, language: state.language } };
}

/** The state after a turn the agent understood none of: one more in the run that began at `missed`, and in the call. */
function misunderstood(state: DialogueState, missed: { run: number; total: number }): DialogueState {
  return { ...state, misunderstood: { run: missed.run + 1, total: missed.total + 1 }, notUnderstood: (state.notUnderstood ?? 0) + 1 };
}

/** The input of a caller's confirmed words: in grammar, as sure as the turn that confirmed them. */
function confirmedInput(message: ChatMessage): ChatMessage['input'] {
  const input = withoutHeardAs(message.input ?? { source: 'speech' });
  return { ...input, inGrammar: true, confidence: Math.max(message.input?.confidence ?? 1, 0.5) };
}

/** The answer to this slot is sensitive (a PIN): masked everywhere, never repeated back. */
export function isSensitiveSlot(config: RulesConfig, intentName: string, slotName: string): boolean {
  return config.intents.find((i) => i.name === intentName)?.slots?.some((s) => s.name === slotName && s.sensitive === true) ?? false;
}

/** Start a form, answer a state question, or run a one-shot intent. */
function runIntent(
  ctx: EngineContext, prev: DialogueState, intent: RuleIntent, ws: string[], text: string, lang: string, turn: number,
): { state: DialogueState; output: Output } {
  const state: DialogueState = { ...prev, asked: [...(prev.asked ?? []), intent.name].slice(-8) };
  if (intent.slots) return startForm(ctx, state, intent, extractValues(ctx, intent, ws, text, lang, undefined, false).values, lang);
  if (intent.about) return { state, output: { text: aboutText(ctx, state, intent, lang), language: lang } };
  if (!intent.tool) return { state, output: { text: pickVariant(intent.reply[lang], {}) ?? ctx.config.fallback[lang], language: lang } };
  const call: ToolCall = { id: `call_rules_${intent.name}_t${turn}`, name: intent.tool.name, arguments: JSON.stringify(toolArgs(intent, {}, ws, text, ctx)) };
  return { state, output: { text: intent.say?.[lang] ?? '', language: lang, toolCall: call } };
}

function startForm(
  ctx: EngineContext, prev: DialogueState, intent: RuleIntent, values: Record<string, SlotValue>, lang: string,
): { state: DialogueState; output: Output } {
  const required = intent.requires ? intentByName(ctx, intent.requires) : undefined;
  const id = prev.formCount + 1;
  if (required && !prev.done.some((f) => f.intent === required.name)) {
    // Verify first, then come back to what the caller asked for, with what they already said.
    const form: FormInstance = { id, intent: required.name, slots: {}, asking: '', attempts: 0, failures: 0, executing: false, resume: { intent: intent.name, slots: values } };
    return next(ctx, { ...prev, formCount: id }, form, required, lang, '');
  }
  const form: FormInstance = { id, intent: intent.name, slots: values, asking: '', attempts: 0, failures: 0, executing: false };
  return next(ctx, { ...prev, formCount: id }, form, intent, lang, '');
}

/** Ask for the first missing required slot, or read back and ask for confirmation. */
function next(
  ctx: EngineContext, state: DialogueState, form: FormInstance, intent: RuleIntent, lang: string, prefix: string,
): { state: DialogueState; output: Output } {
  const missing = (intent.slots ?? []).find((s) => s.required !== false && form.slots[s.name] === undefined);
  if (!missing && !intent.confirm && intent.tool) {
    // Nothing to confirm (a check that changes nothing): run it now.
    const call: ToolCall = { id: `call_rules_${intent.name}_${form.id}`, name: intent.tool.name, arguments: JSON.stringify(toolArgs(intent, form.slots, [], '', ctx)) };
    return { state: { ...state, form: { ...form, asking: 'confirm', executing: true } }, output: { text: joinText(prefix, intent.say?.[lang] ?? ''), language: lang, toolCall: call } };
  }
  const asking = missing ? missing.name : 'confirm';
  const f: FormInstance = { ...form, asking, attempts: asking === form.asking ? form.attempts : 0 };
  const s: DialogueState = { ...state, form: f };
  const output: Output = { text: joinText(prefix, question(ctx, s, f)), language: lang };
  if (asking === 'confirm' && intent.tool) output.confirms = { name: intent.tool.name, arguments: JSON.stringify(toolArgs(intent, f.slots, [], '', ctx)) };
  return { state: s, output };
}

/** The open question of a form, in the state's language (a reprompt after a failed answer). */
function question(ctx: EngineContext, state: DialogueState, form: FormInstance): string {
  const lang = state.language;
  const intent = intentByName(ctx, form.intent);
  if (!intent) return '';
  if (form.asking === 'confirm') return fill(intent.confirm?.[lang] ?? '', slotVars(ctx, intent, form.slots, lang)) ?? intent.confirm?.[lang] ?? '';
  if (form.asking === 'change') return ctx.messages.whatToChange[lang];
  const slot = intent.slots?.find((s) => s.name === form.asking);
  if (!slot) return '';
  return (form.attempts > 0 ? slot.reprompt?.[lang] : undefined) ?? slot.prompt[lang];
}

function continueForm(
  ctx: EngineContext, state: DialogueState, form: FormInstance, intent: RuleIntent, message: ChatMessage,
  ws: string[], raw: string[], text: string, lang: string, match: ReturnType<IntentMatcher['match']>, turn: number,
): { state: DialogueState; output: Output } {
  const otherIntent = match !== undefined && match.intent.name !== intent.name;
  const { values, invalid } = extractValues(ctx, intent, ws, text, lang, form.asking, message.input?.source === 'keypad', otherIntent);
  const changed = Object.keys(values).length > 0;
  const merged: FormInstance = { ...form, slots: { ...form.slots, ...values } };

  if (form.asking === 'confirm' || form.asking === 'change') {
    const answer = yesNo(raw, lang, ctx.lexicon);
    // "no, nine o'clock" / "actually make it five": a correction, read back again.
    if (changed) return next(ctx, state, merged, intent, lang, '');
    if (form.asking === 'confirm' && answer === 'yes' && unsure(ctx, message)) {
      // Not sure it was a yes: an action is never taken on a doubtful recognition.
      return retry(ctx, state, form, lang, ctx.messages.yesOrNo[lang]);
    }
    if (form.asking === 'confirm' && answer === 'yes' && intent.tool) {
      const call: ToolCall = { id: `call_rules_${intent.name}_${form.id}`, name: intent.tool.name, arguments: JSON.stringify(toolArgs(intent, form.slots, [], '', ctx)) };
      return { state: { ...state, form: { ...form, executing: true } }, output: { text: intent.say?.[lang] ?? '', language: lang, toolCall: call } };
    }
    if (form.asking === 'change' && answer !== undefined) {
      // "no, nothing" / "yes, it's fine": nothing to change, read back again.
      return next(ctx, state, { ...form, asking: 'change' }, intent, lang, '');
    }
    if (form.asking === 'confirm' && answer === 'no') {
      return { state: { ...state, form: { ...form, asking: 'change', attempts: 0 } }, output: { text: ctx.messages.whatToChange[lang], language: lang } };
    }
  } else if (changed) {
    return next(ctx, state, merged, intent, lang, '');
  }
  if (invalid) {
    return retry(ctx, state, form, lang, invalid);
  }
  // Not an answer: maybe another request ("what time is it?", "what did I book?", "let me talk to a person").
  if (match && match.intent.name !== intent.name && !match.intent.slots) {
    const other = match.intent;
    if (other.confirmIfUnsure && unsure(ctx, message)) {
      return { state: { ...state, pending: other.name }, output: { text: ctx.messages[other.confirmIfUnsure][lang], language: lang, confirms: { name: other.tool?.name ?? other.name, arguments: '{}' } } };
    }
    const r = runIntent(ctx, state, other, ws, text, lang, turn);
    // Answer, then ask the open question again (a tool reply re-asks after its result).
    if (!r.output.toolCall) r.output.text = joinText(r.output.text, question(ctx, r.state, form));
    return r;
  }
  if (form.asking === 'confirm') return retry(ctx, state, form, lang, ctx.messages.yesOrNo[lang]);
  // Not an answer at all: a turn not understood (the form's own maxAttempts decides on a person here).
  return retry(ctx, { ...state, notUnderstood: (state.notUnderstood ?? 0) + 1 }, form, lang, '');
}

/** Count a failed answer; ask again, or hand the caller to a person after maxAttempts. */
function retry(ctx: EngineContext, state: DialogueState, form: FormInstance, lang: string, prefix: string): { state: DialogueState; output: Output } {
  const attempts = form.attempts + 1;
  if (attempts >= (ctx.config.maxAttempts ?? 3)) return handoff(ctx, { ...state, form: undefined }, lang);
  const f = { ...form, attempts };
  const s = { ...state, form: f };
  return { state: s, output: { text: joinText(prefix, question(ctx, s, f)), language: lang } };
}

function handoff(ctx: EngineContext, state: DialogueState, lang: string, line: MessageKey = 'handoff', args = '{}'): { state: DialogueState; output: Output } {
  const n = state.handoffs + 1;
  const call: ToolCall = { id: `call_rules_handoff_${n}`, name: 'transfer_to_human', arguments: args };
  return { state: { ...state, handoffs: n, form: undefined }, output: { text: ctx.messages[line][lang], language: lang, toolCall: call } };
}

/** The transfer the offer proposes (the confirmation gate matches the caller's yes to exactly this call). */
const OFFER_ARGS = JSON.stringify({ reason: 'not_understood' });

/** The file's `handover.offerAfter`: turns not understood in a row, or in the call, before a person is offered. */
function offerDue(ctx: EngineContext, state: DialogueState): boolean {
  const offer = ctx.config.handover?.offerAfter;
  const missed = state.misunderstood;
  if (!offer || !missed) return false;
  return (offer.consecutive !== undefined && missed.run >= offer.consecutive) || (offer.total !== undefined && missed.total >= offer.total);
}

// ---------------------------------------------------------------------------------------------
// A tool result

function onToolResult(ctx: EngineContext, state: DialogueState, call: ToolCall | undefined, content: string): { state: DialogueState; output: Output } {
  const lang = state.language;
  const result = jsonOrText(content);
  const failed = isRecord(result) && result.error !== undefined;
  const id = call ? /^call_rules_(.+)_(t?\d+)$/.exec(call.id) : null;
  const form = state.form;

  if (call && form && form.executing && id && id[1] === form.intent && id[2] === String(form.id)) {
    const intent = intentByName(ctx, form.intent);
    if (!intent) return { state: { ...state, form: undefined }, output: { text: ctx.config.toolDone[lang], language: lang } };
    if (failed && isRecord(result) && result.error === 'confirmation_required') {
      // The gate did not count the last yes (the read-back was cut off before the caller heard it): read back again.
      const s: DialogueState = { ...state, form: { ...form, executing: false, asking: 'confirm' } };
      return { state: s, output: { text: question(ctx, s, s.form as FormInstance), language: lang } };
    }
    if (failed) {
      // The action did not happen: keep the form and ask again, so "yes" can try again.
      const s: DialogueState = { ...state, form: { ...form, executing: false, asking: 'confirm' } };
      return { state: s, output: { text: joinText(intent.error?.[lang] ?? ctx.config.toolError[lang], question(ctx, s, s.form as FormInstance)), language: lang } };
    }
    const res = isRecord(result) ? result : {};
    if (res.ok === false) {
      const failures = form.failures + 1;
      if (failures >= (ctx.config.maxAttempts ?? 3)) return handoff(ctx, { ...state, form: undefined }, lang);
      const again: FormInstance = { ...form, slots: {}, executing: false, failures, asking: '', attempts: 0 };
      return next(ctx, state, again, intent, lang, intent.failure?.[lang] ?? ctx.config.toolError[lang]);
    }
    const finished: FormInstance = { ...form, executing: false, result: res };
    const vars = { ...slotVars(ctx, intent, form.slots, lang), args: jsonOrText(call.arguments), result: res };
    const reply = pickVariant(intent.reply[lang], vars) ?? ctx.config.toolDone[lang];
    const s: DialogueState = { ...state, form: undefined, done: [...state.done, finished] };
    const resumeIntent = form.resume ? intentByName(ctx, form.resume.intent) : undefined;
    if (form.resume && resumeIntent) {
      const started = startForm(ctx, s, resumeIntent, form.resume.slots, lang);
      return { state: started.state, output: { ...started.output, text: joinText(reply, started.output.text) } };
    }
    return { state: s, output: { text: reply, language: lang } };
  }

  // A one-shot intent's tool (the time, a goodbye): its reply, then the open question if a form is active.
  let text: string;
  if (failed) text = ctx.config.toolError[lang];
  else {
    const intent = call ? (ctx.config.intents.find((it) => it.name === id?.[1] && it.tool?.name === call.name) ?? ctx.config.intents.find((it) => it.tool?.name === call.name)) : undefined;
    text = intent ? (pickVariant(intent.reply[lang], { args: call ? jsonOrText(call.arguments) : {}, result }) ?? ctx.config.toolDone[lang]) : ctx.config.toolDone[lang];
  }
  if (form && !form.executing && call?.name !== 'end_call' && call?.name !== 'transfer_to_human') text = joinText(text, question(ctx, state, form));
  return { state, output: { text, language: lang } };
}

// ---------------------------------------------------------------------------------------------
// Language, confidence, state questions

/**
 * The language of the caller's words: the one the recogniser heard them in when it tells languages apart,
 * else the matched phrase's, else the one most of the words belong to.
 */
function turnLanguage(
  ctx: EngineContext,
  state: DialogueState,
  text: string,
  heardIn?: string,
): { language: string; match: ReturnType<IntentMatcher['match']> } {
  const ws = words(text);
  const scores = new Map<string, number>();
  // The recogniser decided on the whole utterance's sound (which language's grammar it fits): it outweighs a
  // phrase match, which short answers ("mañana", "sí") rarely give.
  if (heardIn && ctx.config.languages.includes(heardIn)) scores.set(heardIn, 3);
  for (const w of ws) {
    const owners = ctx.config.languages.filter((l) => ctx.vocabulary.get(l)?.has(w));
    if (owners.length === 0 || owners.length === ctx.config.languages.length) continue;
    for (const l of owners) scores.set(l, (scores.get(l) ?? 0) + 1 / owners.length);
  }
  const match = ctx.matcher.match(text, state.language);
  if (match) scores.set(match.language, (scores.get(match.language) ?? 0) + 2);
  let best = state.language;
  let bestScore = scores.get(state.language) ?? 0;
  for (const [l, s] of scores) {
    if (s > bestScore) {
      best = l;
      bestScore = s;
    }
  }
  return { language: best, match };
}

/** Speech the recogniser was not sure of, or that fell outside the agent's grammar. */
function unsure(ctx: EngineContext, message: ChatMessage): boolean {
  const input = message.input;
  if (!input || input.source !== 'speech') return false;
  if (input.inGrammar === false) return true;
  return input.confidence !== undefined && input.confidence < (ctx.config.minConfidence ?? 0.5);
}

function aboutText(ctx: EngineContext, state: DialogueState, intent: RuleIntent, lang: string): string {
  const target = intentByName(ctx, intent.about ?? '');
  const form = state.form?.intent === target?.name ? state.form : [...state.done].reverse().find((f) => f.intent === target?.name);
  if (!target || !form) return intent.none?.[lang] ?? ctx.config.fallback[lang];
  const vars = { ...slotVars(ctx, target, form.slots, lang), result: form.result ?? {} };
  return pickVariant(intent.reply[lang], vars) ?? intent.none?.[lang] ?? ctx.config.fallback[lang];
}

function intentByName(ctx: EngineContext, name: string): RuleIntent | undefined {
  return ctx.config.intents.find((i) => i.name === name);
}

function hasPhraseAnyLanguage(ws: readonly string[], list: Record<string, string[]>): boolean {
  return Object.values(list).some((phrases) => hasPhrase(ws, phrases));
}

function joinText(a: string, b: string): string {
  return [a.trim(), b.trim()].filter(Boolean).join(' ');
}

/** Words callers of each language use: the intents' phrases, the dialogue words, number words, slot values. */
export function buildVocabulary(config: RulesConfig, lexicon: Lexicon): Map<string, Set<string>> {
  const vocab = new Map<string, Set<string>>();
  for (const lang of config.languages) {
    const set = new Set<string>();
    const add = (s: string): void => {
      for (const w of words(s)) if (!/^\d/.test(w)) set.add(w);
    };
    for (const intent of config.intents) {
      for (const p of intent.phrases[lang] ?? []) add(p);
      for (const k of intent.keywords?.[lang] ?? []) add(k.replace(/\*$/, ''));
      for (const slot of intent.slots ?? []) for (const perLang of Object.values(slot.values ?? {})) for (const v of perLang[lang] ?? []) add(v);
    }
    for (const list of [lexicon.yes, lexicon.no, lexicon.cancel, lexicon.correction]) for (const p of list[lang] ?? []) add(p);
    for (let n = 0; n <= 30; n++) add(spokenNumber(n, lang));
    vocab.set(lang, set);
  }
  return vocab;
}

