/**
 * `GET /v1/capabilities`: each provider and transport describes itself; the embedded default keeps every
 * stage on this machine's CPU, and a caller needs a credential to read it.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CompositeTts } from '../src/providers/tts/index.js';
import type { TtsProvider } from '../src/providers/tts/types.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

let server: TestServer;
beforeAll(async () => {
  server = await startTestServer();
});
afterAll(async () => {
  await server?.stop();
});

interface Capabilities {
  status: string;
  stages: Record<'vad' | 'asr' | 'llm' | 'tts', { provider: string; runsOn: string[]; streaming: boolean; languages?: string[] }>;
  offMachine: string[];
  transports: { name: string; door: string; enabled: boolean; audio: string[]; control: string }[];
}

describe('GET /v1/capabilities', () => {
  it('says the embedded default runs every stage on this machine, streaming where it can', async () => {
    const res = await fetch(`${server.httpUrl}/v1/capabilities`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    expect(res.status).toBe(200);
    const body = (await res.json()) as Capabilities;
    expect(body.status).toBe('ready');
    expect(body.offMachine).toEqual([]);
    expect(body.stages.vad).toMatchObject({ provider: 'silero-v5', runsOn: ['cpu'], streaming: true });
    expect(body.stages.asr).toMatchObject({ provider: 'pocketsphinx', runsOn: ['cpu'], streaming: true });
    expect(body.stages.asr.languages).toContain('en');
    expect(body.stages.llm).toMatchObject({ provider: 'rules', runsOn: ['cpu'], streaming: false });
    expect(body.stages.tts.runsOn).toEqual(['cpu']);
    expect(body.stages.tts.languages).toEqual(expect.arrayContaining(['en', 'es', 'fr', 'de', 'it']));
  });

  it('lists every door with the audio it speaks and whether this node has it on', async () => {
    const res = await fetch(`${server.httpUrl}/v1/capabilities`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    const { transports } = (await res.json()) as Capabilities;
    const byName = new Map(transports.map((t) => [t.name, t]));
    expect([...byName.keys()]).toEqual(['ws', 'realtime', 'twilio', 'telnyx', 'vonage', 'webrtc', 'sip', 'chat-completions']);
    expect(byName.get('ws')?.audio).toEqual(expect.arrayContaining(['pcm16/16000', 'pcmu/8000', 'opus/48000']));
    expect(byName.get('webrtc')?.audio).toEqual(['opus/48000']);
    expect(byName.get('sip')).toMatchObject({ enabled: true, audio: ['pcmu/8000', 'pcma/8000', 'opus/48000'] });
    expect(byName.get('chat-completions')).toMatchObject({ enabled: false, audio: [] });
  });

  it('needs a credential', async () => {
    const res = await fetch(`${server.httpUrl}/v1/capabilities`);
    expect(res.status).toBe(401);
  });
});

describe('a composite provider', () => {
  it('runs where its parts run, and streams only if they all do', () => {
    const part = (name: string, runsOn: 'cpu' | 'server', streaming: boolean): TtsProvider => ({
      name,
      languages: [name],
      capabilities: { runsOn: [runsOn], streaming },
      load: async () => {},
      synthesize: () => ({ [Symbol.asyncIterator]: () => ({ next: async () => ({ done: true as const, value: undefined }) }) }),
    });
    const tts = new CompositeTts([part('en', 'server', true), part('fr', 'cpu', false)]);
    expect(tts.capabilities).toEqual({ runsOn: ['server', 'cpu'], streaming: false });
  });
});
