/**
 * Where a word sequence stands in the grammar's sentences: no sentence's start at all, the start of one
 * ("book a table for"), a whole sentence ("book a table for two"), or a whole sentence that can go on with more
 * values ("book a table for two" → "… for two tomorrow at seven", "at seven" → "at seven thirty"). Turn-taking reads
 * the last two apart: a caller who stops after a sentence that cannot go on has finished; after one that can, they
 * may only be breathing between the parts of a long request. A sentence that can only go on with words that add no
 * value ("goodbye" → "goodbye see you") counts as complete: ending the turn there loses nothing.
 *
 * A trie of the sentences' tokens, each slot one edge into a trie of its values, read word by word as a set of
 * positions (a word may go on a plain word or start a slot value, a value may be the start of a longer one).
 */
import type { Token } from './fsg.js';

interface WordTrie {
  end: boolean;
  next: Map<string, WordTrie>;
}

interface SentenceNode {
  end: boolean;
  words: Map<string, SentenceNode>;
  slots: Map<string, SentenceNode>;
  /** Some sentence goes on from here through a slot (a value still to come). */
  valueAhead: boolean;
}

/** A position: at a sentence node, or inside a slot's value on the way to `after`. */
interface Position {
  at: SentenceNode;
  inSlot?: WordTrie;
}

export type SentenceStanding = 'none' | 'prefix' | 'complete' | 'continuable';

/** The words are a whole sentence, whether or not it can go on. */
export function isWholeSentence(standing: SentenceStanding | undefined): boolean {
  return standing === 'complete' || standing === 'continuable';
}

const wordTrie = (): WordTrie => ({ end: false, next: new Map() });
const sentenceNode = (): SentenceNode => ({ end: false, words: new Map(), slots: new Map(), valueAhead: false });

export class SentenceMatcher {
  private readonly root = sentenceNode();
  private readonly slotTries = new Map<string, WordTrie>();

  constructor(sentences: readonly (readonly Token[])[], slotValues: ReadonlyMap<string, readonly (readonly string[])[]>) {
    for (const [name, values] of slotValues) {
      const root = wordTrie();
      for (const value of values) {
        let at = root;
        for (const w of value) {
          let next = at.next.get(w);
          if (!next) at.next.set(w, (next = wordTrie()));
          at = next;
        }
        at.end = true;
      }
      this.slotTries.set(name, root);
    }
    for (const tokens of sentences) {
      let at = this.root;
      for (const t of tokens) {
        const edges = 'word' in t ? at.words : at.slots;
        const key = 'word' in t ? t.word : t.slot;
        let next = edges.get(key);
        if (!next) edges.set(key, (next = sentenceNode()));
        at = next;
      }
      at.end = true;
    }
    markValuesAhead(this.root);
  }

  /** Where `text` (words separated by spaces, lower-case) stands among the sentences. */
  standing(text: string): SentenceStanding {
    const words = text.trim().toLowerCase().split(/\s+/).filter((w) => w !== '');
    if (words.length === 0) return 'none';
    let positions: Position[] = [{ at: this.root }];
    for (const word of words) {
      const next: Position[] = [];
      for (const p of positions) {
        if (p.inSlot) {
          const inner = p.inSlot.next.get(word);
          if (inner) this.enter(next, p.at, inner);
          continue;
        }
        const plain = p.at.words.get(word);
        if (plain) next.push({ at: plain });
        for (const [slot, after] of p.at.slots) {
          const inner = this.slotTries.get(slot)?.next.get(word);
          if (inner) this.enter(next, after, inner);
        }
      }
      if (next.length === 0) return 'none';
      positions = dedupe(next);
    }
    let complete = false;
    let goesOn = false;
    for (const p of positions) {
      if (p.inSlot) goesOn = true;
      else {
        if (p.at.end) complete = true;
        if (p.at.valueAhead) goesOn = true;
      }
    }
    return complete ? (goesOn ? 'continuable' : 'complete') : 'prefix';
  }

  /** Inside a slot value: a whole value also stands after the slot; a value that goes on stays inside. */
  private enter(into: Position[], after: SentenceNode, inner: WordTrie): void {
    if (inner.end) into.push({ at: after });
    if (inner.next.size > 0) into.push({ at: after, inSlot: inner });
  }
}

function dedupe(positions: Position[]): Position[] {
  const seen = new Map<SentenceNode, Set<WordTrie | undefined>>();
  return positions.filter((p) => {
    let slots = seen.get(p.at);
    if (!slots) seen.set(p.at, (slots = new Set()));
    if (slots.has(p.inSlot)) return false;
    slots.add(p.inSlot);
    return true;
  });
}

/** Sets `valueAhead` on every node (children first, without deep recursion). */
function markValuesAhead(root: SentenceNode): void {
  const order: SentenceNode[] = [];
  const stack = [root];
  while (stack.length > 0) {
    const node = stack.pop() as SentenceNode;
    order.push(node);
    stack.push(...node.words.values(), ...node.slots.values());
  }
  for (let i = order.length - 1; i >= 0; i--) {
    const node = order[i];
    node.valueAhead = node.slots.size > 0 || [...node.words.values()].some((n) => n.valueAhead);
  }
}
