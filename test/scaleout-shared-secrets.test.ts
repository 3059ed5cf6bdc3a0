/**
 * Several nodes behind one proxy: what one node issues, another must accept. A session token minted on node A is
 * valid on node B when both share the token secret; a SIP Digest challenge from node A can be answered to node B
 * (Kamailio's dispatcher may route the retried INVITE elsewhere) when both share the nonce secret. Without the
 * shared secrets each node keeps a key of its own and refuses the other's.
 */
import { describe, expect, it } from 'vitest';
import { Auth, hashApiKey } from '../src/auth/auth.js';
import { silentLogger } from '../src/core/logger.js';
import { DigestAuth, digestResponse, NONCE_SECRET_ENV } from '../src/transports/sip/access.js';

const KEY = 'shared-cluster-api-key';

function node(env: NodeJS.ProcessEnv): Auth {
  return new Auth({ apiKeyHashes: [hashApiKey(KEY)], tokenTtlS: 300, required: true }, silentLogger(), env);
}

/** The Authorization header a phone sends back for `challenge`. */
function answer(challenge: string, password: string): string {
  const nonce = /nonce="([^"]+)"/.exec(challenge)?.[1] ?? '';
  return digestResponse({ username: 'trunk', password, realm: 'cluster', nonce, method: 'INVITE', uri: 'sip:agent@example.net', nc: '00000001', cnonce: '0a4f113b' });
}

describe('secrets shared by the nodes of a cluster', () => {
  it('a session token from one node is accepted by another with the same token secret, and refused without it', async () => {
    const shared = { VOICE_AGENT_TOKEN_SECRET: 'a-cluster-wide-token-secret-0123456789' };
    const a = node(shared);
    const principal = await a.authenticate({ authorization: `Bearer ${KEY}` });
    const { token } = await a.mintToken(principal, { customerId: 'c-42' });
    const b = node(shared);
    expect(await b.authenticate({ token })).toMatchObject({ kind: 'token', keyId: principal.keyId });
    await expect(node({}).authenticate({ token })).rejects.toThrow();
  });

  it('a Digest challenge from one node is answered to another with the same nonce secret, and refused without it', () => {
    const users = { trunk: 'pa55word-for-the-trunk' };
    const shared = { [NONCE_SECRET_ENV]: 'a-cluster-wide-nonce-secret-0123456789' };
    const challenger = new DigestAuth({ realm: 'cluster', users }, shared);
    const header = answer(challenger.challenge(), users.trunk);
    expect(new DigestAuth({ realm: 'cluster', users }, shared).verify('INVITE', header, '198.51.100.7')).toBe('ok');
    expect(new DigestAuth({ realm: 'cluster', users }, {}).verify('INVITE', header, '198.51.100.7')).toBe('invalid');
    expect(() => new DigestAuth({ realm: 'cluster', users }, { [NONCE_SECRET_ENV]: 'short' })).toThrow(/at least 16/);
  });
});
