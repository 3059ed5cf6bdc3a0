/**
 * The agent's sentences as a small word automaton (PocketSphinx's FSG format), instead of JSGF.
 *
 * Why: sphinxbase's JSGF compiler copies a rule into every place that references it (each `{time}` slot is ~80
 * states again) and keeps every sentence on its own branch, so the rules agent's English grammar became 2,795
 * states. PocketSphinx's grammar search walks every state × every context phone at the end of every 10 ms frame
 * (`fsg_history_end_frame`), whether a state is active or not: under load that loop was 28 % of the service's
 * CPU (perf, 8 talking callers). The same language, determinised and minimised, is a few hundred states.
 *
 * Exact: every word sequence gets the probability the JSGF gave it (the Viterbi search takes the best path, so
 * a sequence several sentences produce gets the best of their weights). Weights are pushed towards the start
 * (each state carries the best weight of what can follow it), so prefixes and suffixes that sentences share
 * become one path. The FSG format has a single final state and the search does not follow a null transition
 * into it at the end of an utterance, so a word that ends a sentence also has an arc straight to the final state.
 */

/** A sentence template's parts: a plain word, or a slot filled by one of its values. */
export type Token = { word: string } | { slot: string };

export interface WeightedSentence {
  tokens: readonly Token[];
  /** Probability-like weight of the sentence (JSGF alternative weight, normalised as the JSGF compiler does). */
  weight: number;
}

interface NfaNode {
  /** Probability of ending a sentence here (0: not a sentence end). */
  final: number;
  arcs: Array<{ word: string; weight: number; to: number }>;
}

/**
 * Word-level automaton (no null arcs) accepting each sentence with its slots expanded, weighted as the JSGF compiler
 * weighs it: each alternative of a rule gets its weight over the sum of its rule's weights (a slot value 1/values).
 */
function buildNfa(sentences: readonly WeightedSentence[], slotValues: ReadonlyMap<string, readonly (readonly string[])[]>): { nodes: NfaNode[]; starts: Array<{ node: number; weight: number }> } {
  const nodes: NfaNode[] = [];
  const node = (): number => nodes.push({ final: 0, arcs: [] }) - 1;
  const starts: Array<{ node: number; weight: number }> = [];
  for (const { tokens, weight } of sentences) {
    let at = node();
    starts.push({ node: at, weight });
    for (const token of tokens) {
      const next = node();
      const paths = 'word' in token ? [[token.word]] : slotValues.get(token.slot) ?? [];
      for (const words of paths) {
        let from = at;
        words.forEach((word, i) => {
          const to = i === words.length - 1 ? next : node();
          nodes[from].arcs.push({ word, weight: i === 0 ? 1 / paths.length : 1, to });
          from = to;
        });
      }
      at = next;
    }
    nodes[at].final = 1;
  }
  return { nodes, starts };
}

/**
 * A weight as a key: equal weights reached by different products must compare equal, and a key is built for every
 * member of every state, so it is an integer: weights here are at most 1, and 1e-9 is far below what the decoder keeps.
 */
function weightKey(w: number): number {
  return w === 1 ? 1 : Math.round(w * 1e9);
}

/**
 * FSG text for the sentences (`fsg_model_read` format). Deterministic on words, minimal up to weights; throws on an
 * empty language.
 */
export function sentenceFsg(
  name: string,
  sentences: readonly WeightedSentence[],
  slotValues: ReadonlyMap<string, readonly (readonly string[])[]>,
  /**
   * The decoder's language weight (`-lw`). It scales an FSG file's log probabilities but not a JSGF's, so the file's
   * probabilities are the JSGF's to the power 1/lw: both searches then score every path alike.
   */
  languageWeight: number,
): string {
  const { nodes, starts } = buildNfa(sentences, slotValues);
  if (starts.length === 0) throw new Error(`grammar ${name}: no sentence`);

  // Weighted subset construction (Mohri): a state is the set of sentence positions a word prefix can reach, each with
  // its best prefix weight relative to the state's best; the arc into the state carries that best.
  interface DState {
    members: Map<number, number>;
    final: number;
    arcs: Array<{ word: string; weight: number; to: number }>;
  }
  const states: DState[] = [];
  const index = new Map<string, number>();
  const pending: number[] = [];
  const intern = (members: Map<number, number>): number => {
    const sorted = [...members].sort((a, b) => a[0] - b[0]);
    let key = '';
    for (const [q, r] of sorted) key += r === 1 ? `${q},` : `${q}:${weightKey(r)},`;
    const known = index.get(key);
    if (known !== undefined) return known;
    let final = 0;
    for (const [q, r] of sorted) final = Math.max(final, r * nodes[q].final);
    const id = states.push({ members, final, arcs: [] }) - 1;
    index.set(key, id);
    pending.push(id);
    return id;
  };
  const initialWeight = Math.max(...starts.map((s) => s.weight));
  const start = intern(new Map(starts.map((s) => [s.node, s.weight / initialWeight])));
  while (pending.length > 0) {
    const id = pending.pop() as number;
    const byWord = new Map<string, Map<number, number>>();
    for (const [q, r] of states[id].members) {
      for (const arc of nodes[q].arcs) {
        let targets = byWord.get(arc.word);
        if (!targets) byWord.set(arc.word, (targets = new Map()));
        targets.set(arc.to, Math.max(targets.get(arc.to) ?? 0, r * arc.weight));
      }
    }
    for (const [word, targets] of byWord) {
      const best = Math.max(...targets.values());
      for (const [q, r] of targets) targets.set(q, r / best);
      states[id].arcs.push({ word, weight: best, to: intern(targets) });
    }
  }

  // Post-order (children first) without deep recursion.
  const order: number[] = [];
  const seen = new Set<number>([start]);
  const stack: Array<{ id: number; next: number }> = [{ id: start, next: 0 }];
  while (stack.length > 0) {
    const top = stack[stack.length - 1];
    const arcs = states[top.id].arcs;
    if (top.next === arcs.length) {
      order.push(top.id);
      stack.pop();
      continue;
    }
    const to = arcs[top.next++].to;
    if (!seen.has(to)) {
      seen.add(to);
      stack.push({ id: to, next: 0 });
    }
  }

  // Weight pushing: each state's best completion, so that equal futures have equal weights and can be merged.
  const potential = new Map<number, number>();
  for (const id of order) {
    const s = states[id];
    potential.set(id, Math.max(s.final, ...s.arcs.map((a) => a.weight * (potential.get(a.to) as number))));
  }

  // Minimisation: the language has no loops, so states with the same pushed future merge bottom-up.
  const classOf = new Map<number, number>();
  const classes: Array<{ final: number; arcs: Array<{ word: string; weight: number; to: number }> }> = [];
  const signatures = new Map<string, number>();
  for (const id of order) {
    const s = states[id];
    const d = potential.get(id) as number;
    const arcs = s.arcs
      .map((a) => ({ word: a.word, weight: (a.weight * (potential.get(a.to) as number)) / d, to: classOf.get(a.to) as number }))
      .sort((a, b) => (a.word < b.word ? -1 : a.word > b.word ? 1 : 0));
    const final = s.final / d;
    const signature = `${weightKey(final)}|${arcs.map((a) => `${a.word} ${weightKey(a.weight)} ${a.to}`).join('|')}`;
    let c = signatures.get(signature);
    if (c === undefined) {
      c = classes.push({ final, arcs }) - 1;
      signatures.set(signature, c);
    }
    classOf.set(id, c);
  }
  const startClass = classOf.get(start) as number;
  // The start keeps the sentences' own weights: its best completion goes onto its arcs.
  const startWeight = initialWeight * (potential.get(start) as number);

  // Number the classes that have arcs of their own; one that only ends sentences is the final state itself.
  const number = new Map<number, number>([[startClass, 0]]);
  for (let c = 0; c < classes.length; c++) if (classes[c].arcs.length > 0 && !number.has(c)) number.set(c, number.size);
  const finalState = number.size;
  const probability = (p: number): string => Math.pow(p, 1 / languageWeight).toPrecision(9);
  const lines: string[] = [];
  for (const [c, from] of number) {
    const scale = c === startClass ? startWeight : 1;
    for (const arc of classes[c].arcs) {
      const target = classes[arc.to];
      const to = number.get(arc.to);
      if (to !== undefined) lines.push(`TRANSITION ${from} ${to} ${probability(scale * arc.weight)} ${arc.word}`);
      if (target.final > 0) lines.push(`TRANSITION ${from} ${finalState} ${probability(scale * arc.weight * target.final)} ${arc.word}`);
    }
  }
  return [
    `FSG_BEGIN ${name}`,
    `NUM_STATES ${finalState + 1}`,
    'START_STATE 0',
    `FINAL_STATE ${finalState}`,
    ...lines,
    'FSG_END',
    '',
  ].join('\n');
}
