import { randomUUID } from 'node:crypto';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { DEFAULT_CONFIG, mergeConfig, type ConfigOverrides, type ServiceConfig } from '../../src/config.js';
import { silentLogger, createLogger } from '../../src/core/logger.js';
import { buildServer, type VoiceServer } from '../../src/server.js';
import { hashApiKey } from '../../src/auth/auth.js';

/** The API key every test server accepts. */
export const TEST_API_KEY = 'test-key-not-secret';
import type { Session, SessionProviders } from '../../src/session/session.js';

export interface TestServer {
  server: VoiceServer;
  config: ServiceConfig;
  port: number;
  wsUrl: string;
  httpUrl: string;
  stop(): Promise<void>;
}

/** A real server on 127.0.0.1 and a free port, models loaded. LOG_LEVEL=debug shows its logs. */
export async function startTestServer(overrides: ConfigOverrides = {}, providers?: SessionProviders): Promise<TestServer> {
  const base = mergeConfig(DEFAULT_CONFIG, {
    host: '127.0.0.1',
    port: 0,
    auth: { apiKeyHashes: [hashApiKey(TEST_API_KEY)] },
    store: { path: path.join(tmpdir(), `voice-agent-test-${randomUUID()}.db`) },
    // Parallel test servers must not fight over 5060.
    sip: { host: '127.0.0.1', port: 0 },
    // A test holds a few calls at a time: the ten spares a service keeps per grammar pool for a burst of new calls
    // would only be built in the background on the suite's two cores.
    providers: { asr: { provider: 'pocketsphinx', grammarSpareDecoders: 2 } },
  });
  const config = mergeConfig(base, overrides);
  const logger = process.env.LOG_LEVEL ? createLogger(process.env.LOG_LEVEL) : silentLogger();
  const server = buildServer(config, logger, providers);
  const port = await server.start();
  await server.service.load();
  return {
    server,
    config,
    port,
    wsUrl: `ws://127.0.0.1:${port}/v1/ws`,
    httpUrl: `http://127.0.0.1:${port}`,
    stop: () => server.stop(),
  };
}

/** The session of the call a telephony provider knows as `networkId` (our ids are our own; theirs is an attribute). */
export async function sessionForNetworkCall(server: TestServer, networkId: string): Promise<Session> {
  for (let i = 0; i < 200; i++) {
    const callId = await server.server.service.store.idForNetworkId(networkId);
    const session = callId ? server.server.service.sessions.get(callId) : undefined;
    if (session) return session;
    await new Promise<void>((resolve) => setTimeout(resolve, 10));
  }
  throw new Error(`no session for network call ${networkId}`);
}

/** A session token, as a provider webhook mints one per call: API keys are never accepted in a URL. */
export async function mintSessionToken(server: TestServer): Promise<string> {
  const res = await fetch(`${server.httpUrl}/v1/tokens`, {
    method: 'POST',
    headers: { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' },
    body: '{}',
  });
  return ((await res.json()) as { token: string }).token;
}
