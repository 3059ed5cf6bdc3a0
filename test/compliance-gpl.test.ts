/**
 * The GPL-3.0 components are optional: with eSpeak NG's WASM build unused (the system's espeak-ng program in a
 * separate process instead, or no eSpeak at all) and no SVOX Pico voices, the service starts and speaks.
 */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import WebSocket from 'ws';
import { rmsDbfs } from '../src/audio/format.js';
import { defaultEspeakEngine } from '../src/providers/tts/index.js';
import { EspeakProcessTts } from '../src/providers/tts/espeak-process/index.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';

describe('eSpeak NG engine choice', () => {
  it('takes the in-process build only when it is installed, the system program otherwise, and obeys VOICE_AGENT_ESPEAK', () => {
    const yes = () => true;
    const no = () => false;
    expect(defaultEspeakEngine({}, { wasm: yes, program: yes })).toBe('wasm');
    expect(defaultEspeakEngine({}, { wasm: no, program: yes })).toBe('process');
    expect(defaultEspeakEngine({}, { wasm: no, program: no })).toBe('none');
    expect(defaultEspeakEngine({ VOICE_AGENT_ESPEAK: 'process' }, { wasm: yes, program: yes })).toBe('process');
    expect(defaultEspeakEngine({ VOICE_AGENT_ESPEAK: 'none' }, { wasm: yes, program: yes })).toBe('none');
  });

  it('speaks through the espeak-ng program, in languages Pico lacks, and stops when aborted', async () => {
    const tts = new EspeakProcessTts();
    await tts.load();
    expect(tts.languages).toEqual(expect.arrayContaining(['en', 'pt', 'nl', 'fr']));
    const chunks: Int16Array[] = [];
    for await (const chunk of tts.synthesize('Olá, em que posso ajudar?', { language: 'pt' })) chunks.push(chunk);
    const samples = Int16Array.from(chunks.flatMap((c) => [...c]));
    expect(samples.length / 16_000).toBeGreaterThan(0.8);
    expect(rmsDbfs(samples)).toBeGreaterThan(-35);
    const controller = new AbortController();
    let got = 0;
    for await (const chunk of tts.synthesize('This is a long sentence that will be cut off long before it ends, because the caller spoke.', { language: 'en', signal: controller.signal })) {
      got += chunk.length;
      controller.abort();
    }
    expect(got).toBeLessThan(16_000 * 3);
  });
});

describe('the service without GPL components in its process', () => {
  let server: TestServer;
  beforeAll(async () => {
    // No Pico voices here, the WASM build not used: only the separate espeak-ng process can speak.
    const noPico = mkdtempSync(path.join(tmpdir(), 'no-pico-'));
    server = await startTestServer({ providers: { tts: { provider: 'auto', voicesDir: noPico, espeakEngine: 'process' } }, sip: { enabled: false } });
  });
  afterAll(async () => {
    await server?.stop();
  });

  it('starts, is healthy and answers a call with audio', async () => {
    expect(server.server.service.providers.tts.name).toBe('espeak-ng-process');
    expect((await fetch(`${server.httpUrl}/healthz`)).status).toBe(200);
    const ws = new WebSocket(`${server.wsUrl}?codec=pcm16&rate=16000`, { headers: { authorization: `Bearer ${TEST_API_KEY}` } });
    let audioBytes = 0;
    const events: Record<string, unknown>[] = [];
    ws.on('message', (data, isBinary) => {
      if (isBinary) audioBytes += (data as Buffer).length;
      else events.push(JSON.parse(String(data)) as Record<string, unknown>);
    });
    await new Promise<void>((resolve, reject) => {
      ws.once('open', () => resolve());
      ws.once('error', reject);
    });
    ws.send(JSON.stringify({ type: 'input.text', text: 'I would like to book a table for two' }));
    const deadline = performance.now() + 20_000;
    while (!events.some((e) => e.type === 'response.done') && performance.now() < deadline) await new Promise((r) => setTimeout(r, 20));
    ws.close();
    expect(events.find((e) => e.type === 'response.done')?.status).toBe('completed');
    expect(audioBytes).toBeGreaterThan(16_000);
  });
});
