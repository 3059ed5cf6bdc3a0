import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { speak } from './helpers/speech.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { TestDevice } from './helpers/device.js';

/**
 * The OpenAI-compatible LLM backend against a second instance of this service that exposes its own brain (the
 * rule-based agent) on /v1/chat/completions: a spoken call on instance 1 thinks on instance 2.
 */
let brain: TestServer;
let media: TestServer;
let askTime: Int16Array;
let brainPort: number;

const auth = { authorization: `Bearer ${TEST_API_KEY}`, 'content-type': 'application/json' };

beforeAll(async () => {
  [brain, askTime] = await Promise.all([startTestServer({ chatCompletions: { enabled: true } }), speak('What time is it?')]);
  brainPort = brain.port;
  media = await startTestServer({
    providers: {
      llm: { provider: 'openai', baseUrl: `${brain.httpUrl}/v1`, model: 'voice-agent', apiKey: TEST_API_KEY, timeoutMs: 2000, retries: 1 },
      // The remote brain is the restaurant agent: its phrases are what the media instance listens for. The
      // open-vocabulary model alone heard the same recording differently from one turn to the next.
      asr: { provider: 'pocketsphinx', grammar: 'on' },
    },
  });
});

afterAll(async () => {
  await Promise.allSettled([media?.stop(), brain?.stop()]);
});

describe('/v1/chat/completions on the service', () => {
  it('answers OpenAI-shaped requests, with tool calls, and refuses bad ones clearly', async () => {
    const tools = [{ type: 'function', function: { name: 'get_current_time', description: 'time', parameters: { type: 'object', properties: {} } } }];
    const res = await fetch(`${brain.httpUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ model: 'voice-agent', messages: [{ role: 'user', content: 'what time is it' }], tools }),
    });
    expect(res.status).toBe(200);
    const body = (await res.json()) as { object: string; choices: Array<{ finish_reason: string; message: { tool_calls?: Array<{ function: { name: string } }> } }> };
    expect(body.object).toBe('chat.completion');
    expect(body.choices[0].finish_reason).toBe('tool_calls');
    expect(body.choices[0].message.tool_calls?.[0].function.name).toBe('get_current_time');

    // French is picked from the words when no language is given.
    const fr = await fetch(`${brain.httpUrl}/v1/chat/completions`, {
      method: 'POST',
      headers: auth,
      body: JSON.stringify({ model: 'voice-agent', messages: [{ role: 'user', content: 'je voudrais parler à un humain' }], tools: [{ type: 'function', function: { name: 'transfer_to_human' } }] }),
    });
    const frBody = (await fr.json()) as { choices: Array<{ message: { content: string | null; tool_calls?: unknown[] } }> };
    expect(frBody.choices[0].message.tool_calls?.length).toBe(1);

    const noKey = await fetch(`${brain.httpUrl}/v1/chat/completions`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{}' });
    expect(noKey.status).toBe(401);
    const badModel = await fetch(`${brain.httpUrl}/v1/chat/completions`, { method: 'POST', headers: auth, body: JSON.stringify({ model: 'gpt-4o', messages: [{ role: 'user', content: 'hi' }] }) });
    expect(badModel.status).toBe(404);
    expect(((await badModel.json()) as { error: { code: string } }).error.code).toBe('model_not_found');
    const badBody = await fetch(`${brain.httpUrl}/v1/chat/completions`, { method: 'POST', headers: auth, body: JSON.stringify({ model: 'voice-agent', messages: 'hi' }) });
    expect(badBody.status).toBe(400);
    expect(((await badBody.json()) as { error: { message: string } }).error.message).toMatch(/messages/);
    // Off by default: the media instance does not expose it.
    const off = await fetch(`${media.httpUrl}/v1/chat/completions`, { method: 'POST', headers: auth, body: '{}' });
    expect(off.status).toBe(404);
  });

  it('a spoken call on instance 1 thinks on instance 2, falls back aloud when it is down, and recovers', async () => {
    const device = new TestDevice(media.wsUrl);
    await device.connect();

    await device.stream(askTime);
    const first = await device.silenceUntil((e) => e.type === 'response.done' && e.status === 'completed', 15_000);
    expect(device.eventsOf('response.tool_call').some((e) => e.name === 'get_current_time')).toBe(true);
    expect(String(first.text)).toMatch(/It is \d{1,2}:\d{2} [AP]M/);
    expect(device.audio.filter((a) => a.dbfs > -40).length).toBeGreaterThan(10);
    const metrics = device.eventsOf('turn.metrics').find((e) => e.turn === first.turn)!;
    console.log(`remote brain: "${String(first.text)}", stages ${JSON.stringify((metrics.metrics as { stages: unknown }).stages)}`);

    // Instance 2 stops: the caller hears the fallback reply and gets llm_failed; the call goes on.
    await brain.stop();
    let since = performance.now();
    await device.stream(askTime);
    const failed = await device.silenceUntil((e) => e.type === 'response.done', 20_000, since);
    const error = device.eventsOf('error', since).find((e) => e.code === 'llm_failed');
    expect(error, JSON.stringify(device.events.filter((e) => e.atMs >= since).map((e) => e.event))).toBeTruthy();
    expect(String(error!.message)).toMatch(/ECONNREFUSED|fetch failed|connection/i);
    expect(String(failed.text)).toContain('Sorry, I am having trouble');
    const fallbackAudio = device.audio.filter((a) => a.atMs >= since && a.dbfs > -40);
    expect(fallbackAudio.length * 20).toBeGreaterThan(500);

    // Instance 2 comes back on the same port: the same call is answered normally again.
    brain = await startTestServer({ port: brainPort, chatCompletions: { enabled: true } });
    since = performance.now();
    await device.stream(askTime);
    const recovered = await device.silenceUntil((e) => e.type === 'response.done' && e.status === 'completed', 15_000, since);
    expect(String(recovered.text)).toMatch(/It is \d{1,2}:\d{2} [AP]M/);
    expect(device.eventsOf('session.started').length).toBe(1);
    await device.close();
  });
});
