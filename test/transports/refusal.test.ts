/** One refusal table for every wire: what each admission error means as HTTP, WebSocket close and SIP status. */
import { describe, expect, it } from 'vitest';
import { AgentSelectionError } from '../../src/agents/registry.js';
import { LimitError, NotReadyError } from '../../src/limits/limits.js';
import { refusalOf } from '../../src/transports/kit/refusal.js';

describe('refusalOf', () => {
  it('says a key over its call limit is busy, not broken, on every wire', () => {
    expect(refusalOf(new LimitError('session_limit', 'key-a holds 100 calls'))).toEqual({
      code: 'session_limit',
      message: 'key-a holds 100 calls',
      kind: 'policy',
      http: 503,
      retryAfterS: 5,
      wsClose: 1008,
      sip: 486,
    });
  });

  it('tells a key starting calls too fast to slow down', () => {
    expect(refusalOf(new LimitError('rate_limited', 'too many calls a second'))).toMatchObject({ code: 'rate_limited', kind: 'policy', http: 429, retryAfterS: 10, wsClose: 1008, sip: 503 });
  });

  it('answers an agent or number this deployment does not have with not-found, never an internal error', () => {
    expect(refusalOf(new AgentSelectionError('unknown_agent', 'no agent "billing"'))).toMatchObject({ code: 'unknown_agent', kind: 'policy', http: 404, wsClose: 1008, sip: 404 });
    expect(refusalOf(new AgentSelectionError('unknown_number', 'no agent answers +3312345678'))).toMatchObject({ code: 'unknown_number', http: 404, sip: 404 });
  });

  it('asks a caller to come back when the models are loading or the node drains', () => {
    expect(refusalOf(new NotReadyError('draining'))).toMatchObject({ code: 'not_ready', message: 'models are draining; try again shortly', http: 503, retryAfterS: 5, wsClose: 1013, sip: 503 });
  });

  it('keeps an internal failure internal: a generic message, and the wire says it was our fault', () => {
    const refusal = refusalOf(new Error('ENOENT /var/lib/voice/agents/secret-path.json'));
    expect(refusal).toMatchObject({ code: 'internal_error', kind: 'fault', http: 500, wsClose: 1011, sip: 503 });
    expect(refusal.message).not.toContain('secret-path');
  });
});
