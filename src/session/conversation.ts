import type { ChatMessage, InputMeta } from '../providers/llm/types.js';

/**
 * The agent's side of the call: its instructions, then what the caller said and what the caller heard the
 * agent say (never what it only meant to say), with the tool calls that ran. The session and transports
 * change it only through these methods, so its rules (the instructions stay first, a message is removed
 * whole) hold in one place.
 */
export class Conversation {
  private readonly items: ChatMessage[];

  constructor(instructions: string) {
    this.items = [{ role: 'system', content: instructions }];
  }

  /** The messages as the model gets them, instructions first. A live view: copy it to keep a snapshot. */
  get messages(): readonly ChatMessage[] {
    return this.items;
  }

  /** Replace the agent's instructions (system prompt) for the rest of the call. */
  setInstructions(instructions: string): void {
    this.items[0] = { role: 'system', content: instructions };
  }

  /** A caller turn. `secret`: the real words of a masked sensitive answer, for the embedded agent only. */
  addUser(content: string, input?: InputMeta, secret?: string): void {
    this.items.push({ role: 'user', content, ...(secret !== undefined ? { secret } : {}), ...(input ? { input } : {}) });
  }

  /** What the caller heard the agent say (an interrupted reply: only its heard part). */
  addHeard(content: string, confirms?: ChatMessage['confirms']): void {
    this.items.push({ role: 'assistant', content, ...(confirms ? { confirms } : {}) });
  }

  /** A system note added mid-call (a realtime client's system item). */
  addNote(content: string): void {
    this.items.push({ role: 'system', content });
  }

  /** A reply's tool rounds: assistant messages that called tools, and the tools' results. */
  addToolRound(message: ChatMessage): void {
    this.items.push(message);
  }

  /**
   * Forget the latest message of `role` with exactly this text (a caller who was only pausing, a client that
   * deleted an item). The instructions are never removed. True when one was found.
   */
  remove(role: ChatMessage['role'], content: string): boolean {
    const at = this.items.findLastIndex((m, i) => i > 0 && m.role === role && m.content === content);
    if (at < 1) return false;
    this.items.splice(at, 1);
    return true;
  }
}
