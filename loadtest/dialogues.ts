/**
 * Scripted-dialogue benchmark for the embedded dialogue engine, in text: simulated callers with a goal
 * (the values they want, in their language, sometimes with a wrong or unusable first answer) answer
 * whatever the agent asks, until the task's tool has run or the dialogue gives up. Reports task
 * completion rate, turns per completed task and the engine's time per turn.
 *
 *   npm run bench:dialogues -- [--json OUT]
 */
import { writeFileSync } from 'node:fs';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import { TextDialogue } from '../src/providers/llm/rules/driver.js';
import { ToolRegistry } from '../src/providers/llm/tools.js';
import type { InputMeta } from '../src/providers/llm/types.js';

interface Scenario {
  name: string;
  domain: 'restaurant' | 'bank';
  language: string;
  opening: string;
  /** Answers per slot, used in order (the last one repeats); `DTMF:` answers come from the keypad. */
  answers: Record<string, string[]>;
  /** Answers to the read-back, in order (the last one repeats). */
  confirm: string[];
  /** The task is done when this tool ran with these arguments. */
  goal: { tool: string; args: Record<string, unknown> };
}

const TOMORROW = '2026-11-30';
const FRIDAY = '2026-12-04';

const SCENARIOS: Scenario[] = [
  { name: 'en step by step', domain: 'restaurant', language: 'en', opening: 'I would like to book a table', answers: { party_size: ['four people'], date: ['tomorrow'], time: ['at eight pm'], name: ['my name is Anna'] }, confirm: ['yes'], goal: { tool: 'book_appointment', args: { party_size: 4, date: TOMORROW, time: '20:00', name: 'Anna' } } },
  { name: 'en all at once', domain: 'restaurant', language: 'en', opening: 'a table for two tomorrow at 7 under the name Smith', answers: {}, confirm: ['yes please'], goal: { tool: 'book_appointment', args: { party_size: 2, date: TOMORROW, time: '19:00', name: 'Smith' } } },
  { name: 'en correction at read-back', domain: 'restaurant', language: 'en', opening: 'can I book for tomorrow at 7', answers: { party_size: ['three'], name: ['Martin'] }, confirm: ['actually make it five', 'yes'], goal: { tool: 'book_appointment', args: { party_size: 5, date: TOMORROW, time: '19:00', name: 'Martin' } } },
  { name: 'en refused then changed', domain: 'restaurant', language: 'en', opening: 'book a table for six next friday', answers: { time: ['half past seven'], name: ['Rossi'] }, confirm: ['no', 'at nine', 'yes'], goal: { tool: 'book_appointment', args: { party_size: 6, date: FRIDAY, time: '21:00', name: 'Rossi' } } },
  { name: 'en unusable first answers', domain: 'restaurant', language: 'en', opening: 'I want to make a reservation', answers: { party_size: ['hmm let me think', 'we are four'], date: ['friday'], time: ['uh', 'eight'], name: ['Schmidt'] }, confirm: ['correct'], goal: { tool: 'book_appointment', args: { party_size: 4, date: FRIDAY, time: '20:00', name: 'Schmidt' } } },
  { name: 'en out of hours', domain: 'restaurant', language: 'en', opening: 'table for 2 tomorrow', answers: { time: ['at 6 in the morning', 'at 1 pm'], name: ['Anna'] }, confirm: ['yes'], goal: { tool: 'book_appointment', args: { party_size: 2, date: TOMORROW, time: '13:00', name: 'Anna' } } },
  { name: 'fr étape par étape', domain: 'restaurant', language: 'fr', opening: 'je voudrais réserver une table', answers: { party_size: ['quatre personnes'], date: ['demain'], time: ['vingt heures'], name: ["je m'appelle Dupont"] }, confirm: ['oui'], goal: { tool: 'book_appointment', args: { party_size: 4, date: TOMORROW, time: '20:00', name: 'Dupont' } } },
  { name: 'fr tout de suite', domain: 'restaurant', language: 'fr', opening: 'une table pour deux vendredi prochain à 19h30 au nom de Martin', answers: {}, confirm: ["oui c'est ça"], goal: { tool: 'book_appointment', args: { party_size: 2, date: FRIDAY, time: '19:30', name: 'Martin' } } },
  { name: 'de Schritt für Schritt', domain: 'restaurant', language: 'de', opening: 'ich möchte einen Tisch reservieren', answers: { party_size: ['für drei Personen'], date: ['übermorgen'], time: ['halb acht'], name: ['ich heiße Müller'] }, confirm: ['ja genau'], goal: { tool: 'book_appointment', args: { party_size: 3, date: '2026-12-01', time: '19:30', name: 'Müller' } } },
  { name: 'de Korrektur', domain: 'restaurant', language: 'de', opening: 'einen Tisch für zwei morgen um 19 Uhr', answers: { name: ['Schmidt'] }, confirm: ['lieber um 20 Uhr', 'ja'], goal: { tool: 'book_appointment', args: { party_size: 2, date: TOMORROW, time: '20:00', name: 'Schmidt' } } },
  { name: 'es paso a paso', domain: 'restaurant', language: 'es', opening: 'quiero reservar una mesa', answers: { party_size: ['para cuatro personas'], date: ['mañana'], time: ['a las ocho y media'], name: ['me llamo García'] }, confirm: ['sí'], goal: { tool: 'book_appointment', args: { party_size: 4, date: TOMORROW, time: '20:30', name: 'García' } } },
  { name: 'es corrección', domain: 'restaurant', language: 'es', opening: 'una mesa para dos el viernes a las nueve', answers: { name: ['a nombre de López'] }, confirm: ['no, somos tres', 'sí'], goal: { tool: 'book_appointment', args: { party_size: 3, date: FRIDAY, time: '21:00', name: 'López' } } },
  { name: 'it passo passo', domain: 'restaurant', language: 'it', opening: 'vorrei prenotare un tavolo', answers: { party_size: ['per cinque persone'], date: ['domani'], time: ['alle otto e mezza'], name: ['mi chiamo Bianchi'] }, confirm: ['sì'], goal: { tool: 'book_appointment', args: { party_size: 5, date: TOMORROW, time: '20:30', name: 'Bianchi' } } },
  { name: 'en→es switch', domain: 'restaurant', language: 'en', opening: 'I would like to book a table', answers: { party_size: ['para dos personas'], date: ['mañana'], time: ['a las nueve'], name: ['García'] }, confirm: ['sí'], goal: { tool: 'book_appointment', args: { party_size: 2, date: TOMORROW, time: '21:00', name: 'García' } } },
  { name: 'bank en keypad', domain: 'bank', language: 'en', opening: 'I lost my card', answers: { customer_number: ['DTMF: 1 2 3 4 5 6 7 8'], pin: ['DTMF: 4 3 2 1'], card_last4: ['four one one one'] }, confirm: ['yes'], goal: { tool: 'block_card', args: { card_last4: '4111' } } },
  { name: 'bank es voz', domain: 'bank', language: 'es', opening: 'me han robado la tarjeta', answers: { customer_number: ['ocho siete seis cinco cuatro tres dos uno'], pin: ['uno dos tres cuatro'], card_last4: ['nueve ocho siete seis'] }, confirm: ['sí'], goal: { tool: 'block_card', args: { card_last4: '9876' } } },
  { name: 'bank en wrong pin first', domain: 'bank', language: 'en', opening: 'please block my card', answers: { customer_number: ['DTMF: 1 2 3 4 5 6 7 8'], pin: ['DTMF: 0 0 0 0', 'DTMF: 4 3 2 1'], card_last4: ['DTMF: 5 5 2 2'] }, confirm: ['yes'], goal: { tool: 'block_card', args: { card_last4: '5522' } } },
  { name: 'bank de', domain: 'bank', language: 'de', opening: 'ich habe meine Karte verloren', answers: { customer_number: ['DTMF: 8 7 6 5 4 3 2 1'], pin: ['eins zwei drei vier'], card_last4: ['neun acht sieben sechs'] }, confirm: ['ja'], goal: { tool: 'block_card', args: { card_last4: '9876' } } },
  { name: 'bank fr wrong card first', domain: 'bank', language: 'fr', opening: "j'ai perdu ma carte", answers: { customer_number: ['DTMF: 1 2 3 4 5 6 7 8'], pin: ['DTMF: 4 3 2 1'], card_last4: ['DTMF: 0 0 0 0', 'DTMF: 4 1 1 1'] }, confirm: ['oui'], goal: { tool: 'block_card', args: { card_last4: '4111' } } },
  { name: 'bank it', domain: 'bank', language: 'it', opening: 'ho perso la carta', answers: { customer_number: ['DTMF: 1 2 3 4 5 6 7 8'], pin: ['quattro tre due uno'], card_last4: ['cinque cinque due due'] }, confirm: ['sì'], goal: { tool: 'block_card', args: { card_last4: '5522' } } },
  // Recognition-shaped input: homophones, split words, no accents, fillers around the values.
  { name: 'en asr homophones', domain: 'restaurant', language: 'en', opening: 'i would like to book a table for to', answers: { party_size: ['for people', 'four'], date: ['to morrow', 'tomorrow'], time: ['eight p m'], name: ['anna'] }, confirm: ['yes'], goal: { tool: 'book_appointment', args: { party_size: 4, date: TOMORROW, time: '20:00', name: 'Anna' } } },
  { name: 'es sin acentos', domain: 'restaurant', language: 'es', opening: 'quiero reservar una mesa para tres', answers: { date: ['manana'], time: ['a las nueve y media de la noche'], name: ['garcia'] }, confirm: ['si'], goal: { tool: 'book_appointment', args: { party_size: 3, date: TOMORROW, time: '21:30', name: 'García' } } },
  { name: 'fr samedi', domain: 'restaurant', language: 'fr', opening: 'je voudrais réserver pour quatre', answers: { date: ['samedi'], time: ['19 h 30'], name: ['Martin'] }, confirm: ['oui'], goal: { tool: 'book_appointment', args: { party_size: 4, date: '2026-12-05', time: '19:30', name: 'Martin' } } },
  { name: 'bank en digits in sentences', domain: 'bank', language: 'en', opening: 'my card was stolen', answers: { customer_number: ['my number is one two three four five six seven eight'], pin: ['it is four three two one'], card_last4: ['it ends in four one one one'] }, confirm: ['yes go ahead'], goal: { tool: 'block_card', args: { card_last4: '4111' } } },
  { name: 'it correzione', domain: 'restaurant', language: 'it', opening: 'un tavolo per due domani alle otto', answers: { name: ['a nome di Rossi'] }, confirm: ['anzi alle nove', 'sì'], goal: { tool: 'book_appointment', args: { party_size: 2, date: TOMORROW, time: '21:00', name: 'Rossi' } } },
];

const MAX_TURNS = 15;
const NOW = new Date('2026-11-29T10:00:00Z');

interface ScenarioResult {
  name: string;
  domain: string;
  language: string;
  completed: boolean;
  turns: number;
  turnMs: number[];
  args?: unknown;
  transcript: string[];
}

async function runScenario(s: Scenario, agent: RuleBasedAgent): Promise<ScenarioResult> {
  const registry = new ToolRegistry({ timezone: 'Europe/Paris', now: () => NOW, ...(s.domain === 'bank' ? { bank: {} } : {}) });
  const dialogue = new TextDialogue(agent, registry, { language: s.language, callId: s.name });
  const answers = Object.fromEntries(Object.entries(s.answers).map(([k, v]) => [k, [...v]]));
  const confirm = [...s.confirm];
  const take = (list: string[] | undefined): string | undefined => (list && list.length > 1 ? list.shift() : list?.[0]);
  const result: ScenarioResult = { name: s.name, domain: s.domain, language: s.language, completed: false, turns: 0, turnMs: [], transcript: [] };
  let utterance: string | undefined = s.opening;
  while (utterance !== undefined && result.turns < MAX_TURNS) {
    const input: InputMeta = { source: utterance.startsWith('DTMF:') ? 'keypad' : 'text' };
    const started = performance.now();
    const turn = await dialogue.say(utterance, input);
    result.turnMs.push(performance.now() - started);
    result.turns++;
    result.transcript.push(`caller: ${utterance}`, `agent: ${turn.text}`);
    const done = turn.tools.find((t) => t.call.name === s.goal.tool && !JSON.parse(t.result).error && JSON.parse(t.result).ok !== false);
    if (done) {
      result.args = JSON.parse(done.call.arguments);
      result.completed = JSON.stringify(sortKeys(result.args)) === JSON.stringify(sortKeys(s.goal.args));
      break;
    }
    if (turn.action) break;
    const expectation = agent.expectation(dialogue.history);
    if (!expectation) break;
    const [, slot] = expectation.split('.');
    utterance = slot === 'confirm' ? take(confirm) : take(answers[slot]);
  }
  return result;
}

function sortKeys(v: unknown): unknown {
  if (typeof v !== 'object' || v === null) return v;
  return Object.fromEntries(Object.entries(v as Record<string, unknown>).sort(([a], [b]) => a.localeCompare(b)));
}

function percentile(values: number[], p: number): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length === 0 ? 0 : sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))];
}

async function main(): Promise<void> {
  const jsonAt = process.argv.indexOf('--json');
  const out = jsonAt >= 0 ? process.argv[jsonAt + 1] : undefined;
  const agents = {
    restaurant: new RuleBasedAgent({ now: () => NOW, timezone: 'Europe/Paris' }),
    bank: new RuleBasedAgent({ rulesPath: new URL('../config/agent-bank.json', import.meta.url).pathname, now: () => NOW, timezone: 'Europe/Paris' }),
  };
  await Promise.all(Object.values(agents).map((a) => a.load()));
  const results: ScenarioResult[] = [];
  for (const s of SCENARIOS) results.push(await runScenario(s, agents[s.domain]));
  const completed = results.filter((r) => r.completed);
  const allTurns = results.flatMap((r) => r.turnMs);
  const summary = {
    dialogues: results.length,
    completed: completed.length,
    completionRate: Math.round((completed.length / results.length) * 1000) / 1000,
    turnsPerCompletedTask: Math.round((completed.reduce((s, r) => s + r.turns, 0) / Math.max(1, completed.length)) * 100) / 100,
    turnLatencyMs: { p50: round(percentile(allTurns, 50)), p95: round(percentile(allTurns, 95)), max: round(Math.max(...allTurns)) },
    byLanguage: Object.fromEntries(
      [...new Set(results.map((r) => r.language))].map((l) => {
        const rs = results.filter((r) => r.language === l);
        return [l, { dialogues: rs.length, completed: rs.filter((r) => r.completed).length }];
      }),
    ),
  };
  const report = { summary, results: results.map((r) => ({ ...r, turnMs: r.turnMs.map(round) })) };
  for (const r of results) console.log(`${r.completed ? 'ok  ' : 'FAIL'} ${r.name.padEnd(28)} ${r.language} turns=${r.turns}`);
  console.log(JSON.stringify(summary, null, 2));
  if (out) writeFileSync(out, JSON.stringify(report, null, 2));
}

function round(n: number): number {
  return Math.round(n * 100) / 100;
}

await main();
