/**
 * Cuts streamed LLM text into pieces for TTS: the first clause alone (so the first audio comes fast), then
 * whole sentences (so prosody stays natural). A boundary is only trusted once whitespace follows it, which
 * keeps "3.5" and "e.g." from being split mid-token while text is still streaming.
 */
const CLAUSE_END = /[,;:.!?…،、，；：。！？]/;
const SENTENCE_END = /[.!?…。！？]/;
/** Full-width punctuation needs no following space. */
const NO_SPACE_NEEDED = /[。！？，；：、]/;
const ABBREVIATIONS = new Set(['mr.', 'mrs.', 'ms.', 'dr.', 'st.', 'e.g.', 'i.e.', 'etc.', 'vs.', 'no.', 'm.', 'mme.', 'nr.', 'sr.', 'sra.']);
/** Past this many characters a pending sentence is cut at a clause boundary rather than waiting longer. */
const LONG_SENTENCE_CHARS = 160;

export class ClauseSplitter {
  private buffer = '';
  private emitted = 0;

  /** Add streamed text; returns the segments it completed (trimmed, non-empty). */
  push(text: string): string[] {
    this.buffer += text;
    const out: string[] = [];
    for (;;) {
      const cut = this.findCut();
      if (cut < 0) break;
      const segment = this.buffer.slice(0, cut).trim();
      this.buffer = this.buffer.slice(cut);
      if (segment) {
        out.push(segment);
        this.emitted++;
      }
    }
    return out;
  }

  /** The rest, at the end of the response. */
  flush(): string[] {
    const rest = this.buffer.trim();
    this.buffer = '';
    if (!rest) return [];
    this.emitted++;
    return [rest];
  }

  private findCut(): number {
    const wantClause = this.emitted === 0 || this.buffer.length > LONG_SENTENCE_CHARS;
    const boundary = wantClause ? CLAUSE_END : SENTENCE_END;
    for (let i = 0; i < this.buffer.length; i++) {
      const ch = this.buffer[i];
      if (!boundary.test(ch)) continue;
      if (NO_SPACE_NEEDED.test(ch)) return i + 1;
      const next = this.buffer[i + 1];
      if (next === undefined) return -1; // wait for the next token to know
      if (!/\s/.test(next)) continue;
      if (ch === '.' && this.isAbbreviation(i)) continue;
      return i + 1;
    }
    return -1;
  }

  private isAbbreviation(dotIndex: number): boolean {
    const start = this.buffer.lastIndexOf(' ', dotIndex - 1) + 1;
    return ABBREVIATIONS.has(this.buffer.slice(start, dotIndex + 1).toLowerCase());
  }
}
