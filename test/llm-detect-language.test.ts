import { describe, expect, it } from 'vitest';
import { RuleBasedAgent } from '../src/providers/llm/rules/index.js';
import type { LlmProvider } from '../src/providers/llm/types.js';

/**
 * The chat-completions route asks the agent which language a request is in through LlmProvider.detectLanguage,
 * a capability the agent declares, instead of testing for the rules agent's class (issue 11, item 3).
 */
describe('LlmProvider.detectLanguage', () => {
  it('the rules agent tells the language from the words, after load only', async () => {
    const agent: LlmProvider = new RuleBasedAgent({ rulesPath: 'config/agent-rules.json' });
    expect(agent.detectLanguage?.('je voudrais parler à un humain')).toBeUndefined();
    await agent.load();
    expect(agent.detectLanguage?.('je voudrais parler à un humain')).toBe('fr');
    expect(agent.detectLanguage?.('I would like to speak to a human')).toBe('en');
    expect(agent.detectLanguage?.('ich möchte mit einem Menschen sprechen')).toBe('de');
    expect(agent.detectLanguage?.('zzzz qqqq')).toBeUndefined();
  });
});
