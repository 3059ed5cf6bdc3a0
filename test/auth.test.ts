import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { SignJWT } from 'jose';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

let server: TestServer;

beforeAll(async () => {
  server = await startTestServer({ auth: { tokenSecret: 'test-secret-test-secret-test-secret', tokenTtlS: 300 } });
});
afterAll(async () => server?.stop());

/** Opens /v1/ws and reports the HTTP status of a refused upgrade, or 101 when it opened. */
function upgradeStatus(url: string, headers: Record<string, string> = {}): Promise<number> {
  return new Promise((resolve, reject) => {
    const socket = new WebSocket(url, { headers });
    socket.on('open', () => {
      socket.close();
      resolve(101);
    });
    socket.on('unexpected-response', (_req, res) => resolve(res.statusCode ?? 0));
    socket.on('error', reject);
  });
}

async function mint(ttl?: number, key = TEST_API_KEY): Promise<Response> {
  return fetch(`${server.httpUrl}/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${key}`, 'content-type': 'application/json' },
    body: JSON.stringify(ttl ? { ttl_s: ttl } : {}),
  });
}

describe('authentication', () => {
  it('keeps /healthz open and the call endpoint closed without credentials', async () => {
    expect((await fetch(`${server.httpUrl}/healthz`)).status).toBe(200);
    expect(await upgradeStatus(server.wsUrl)).toBe(401);
    expect(await upgradeStatus(server.wsUrl, { authorization: 'Bearer wrong-key' })).toBe(401);
    expect(await upgradeStatus(server.wsUrl, { authorization: `Bearer ${TEST_API_KEY}` })).toBe(101);
  });

  it('protects /metrics only when configured to', async () => {
    const open = await fetch(`${server.httpUrl}/metrics`);
    expect(open.status).toBe(200);
    // Provider series are there too: the VAD worker (running, never hung) read through the service's FallbackVad.
    expect(await open.text()).toMatch(/^voice_agent_vad_worker_hangs 0$[\s\S]*^voice_agent_vad_worker_fallback 0$/m);
    const closed = await startTestServer({ metricsRequireApiKey: true });
    try {
      expect((await fetch(`${closed.httpUrl}/metrics`)).status).toBe(401);
      expect((await fetch(`${closed.httpUrl}/metrics`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } })).status).toBe(200);
    } finally {
      await closed.stop();
    }
  });

  it('mints short-lived session tokens with an API key only', async () => {
    expect((await mint(undefined, 'wrong-key')).status).toBe(401);
    const response = await mint(60);
    expect(response.status).toBe(200);
    const body = (await response.json()) as { token: string; expires_at: number };
    expect(body.expires_at - Date.now() / 1000).toBeGreaterThan(50);
    expect(await upgradeStatus(`${server.wsUrl}?token=${body.token}`)).toBe(101);
    // A token cannot mint more tokens.
    expect((await mint(60, body.token)).status).toBe(401);
    expect((await fetch(`${server.httpUrl}/v1/tokens`, { method: 'POST', headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' }, body: '{"ttl_s":-5}' })).status).toBe(400);
  });

  it('refuses expired, forged and wrong-audience tokens', async () => {
    const secret = new TextEncoder().encode('test-secret-test-secret-test-secret');
    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuer('voice-agent').setAudience('voice-agent:session').setSubject('k').setIssuedAt(now - 600).setExpirationTime(now - 300).sign(secret);
    const forged = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuer('voice-agent').setAudience('voice-agent:session').setSubject('k').setExpirationTime(now + 300).sign(new TextEncoder().encode('another-secret-another-secret-00'));
    const otherAudience = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuer('voice-agent').setAudience('somewhere-else').setSubject('k').setExpirationTime(now + 300).sign(secret);
    expect(await upgradeStatus(`${server.wsUrl}?token=${expired}`)).toBe(401);
    expect(await upgradeStatus(`${server.wsUrl}?token=${forged}`)).toBe(401);
    expect(await upgradeStatus(`${server.wsUrl}?token=${otherAudience}`)).toBe(403);
    expect(await upgradeStatus(`${server.wsUrl}?token=not.a.jwt`)).toBe(401);
  });
});
