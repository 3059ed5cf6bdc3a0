import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import OpenAI from 'openai';
import WebSocket from 'ws';
import { OpenAIRealtimeWS } from 'openai/realtime/ws';
import { OpenAIRealtimeWS as BetaRealtimeWS } from 'openai/beta/realtime/ws';
import type { RealtimeServerEvent } from 'openai/resources/realtime/realtime';
import { rmsDbfs } from '../src/audio/format.js';
import { decodeMulaw, encodeMulaw } from '../src/audio/g711.js';
import { resampleOnce } from '../src/audio/resample.js';
import { lastVoicedFrame } from '../loadtest/run.js';
import { speak } from './helpers/speech.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { startTlsProxy, type TlsProxy } from './helpers/tls-proxy.js';

/**
 * /v1/realtime driven by the official `openai` package's realtime WebSocket client, unmodified: only its
 * base URL and API key point at this service. That client always uses wss://, so the test server sits
 * behind a TLS-terminating proxy (as it would behind a reverse proxy in production).
 */
let server: TestServer;
let proxy: TlsProxy;
let askTime16k: Int16Array;

beforeAll(async () => {
  [server, askTime16k] = await Promise.all([startTestServer(), speak('What time is it?')]);
  proxy = await startTlsProxy(server.port);
});

afterAll(async () => {
  await proxy?.close();
  await server?.stop();
});

const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));
type Ev = RealtimeServerEvent;

/** One realtime client connection and everything it received, timestamped. */
class Client {
  readonly events: { event: Ev; at: number }[] = [];
  readonly errors: Error[] = [];
  readonly rt: OpenAIRealtimeWS;

  constructor(apiKey = TEST_API_KEY) {
    const openai = new OpenAI({ apiKey, baseURL: `https://127.0.0.1:${proxy.port}/v1` });
    // `options` is the client's own pass-through to `ws`: here it trusts the proxy's throwaway certificate.
    this.rt = new OpenAIRealtimeWS({ model: 'gpt-realtime', options: { ca: proxy.ca } }, openai);
    this.rt.on('event', (event) => this.events.push({ event, at: performance.now() }));
    this.rt.on('error', (err) => this.errors.push(err));
  }

  of<T extends Ev['type']>(type: T, since = 0): Extract<Ev, { type: T }>[] {
    return this.events.filter((e) => e.event.type === type && e.at >= since).map((e) => e.event as Extract<Ev, { type: T }>);
  }

  async waitFor<T extends Ev['type']>(type: T, pred: (e: Extract<Ev, { type: T }>) => boolean = () => true, timeoutMs = 15_000, since = 0): Promise<Extract<Ev, { type: T }>> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.of(type, since).find(pred);
      if (found) return found;
      if (performance.now() > deadline) throw new Error(`no ${type} within ${timeoutMs} ms; got ${this.events.map((e) => e.event.type).join(', ')}`);
      await sleep(20);
    }
  }

  /** Append audio bytes in 20 ms chunks at real-time pace; returns each chunk's send time. */
  async stream(bytes: Uint8Array, bytesPer20ms: number): Promise<number[]> {
    const times: number[] = [];
    let next = performance.now();
    for (let off = 0; off < bytes.length; off += bytesPer20ms) {
      next += 20;
      const wait = next - performance.now();
      if (wait > 1) await sleep(wait);
      this.rt.send({ type: 'input_audio_buffer.append', audio: Buffer.from(bytes.subarray(off, off + bytesPer20ms)).toString('base64') });
      times.push(performance.now());
    }
    return times;
  }

  close(): void {
    this.rt.close();
  }
}

async function connect(): Promise<Client> {
  const client = new Client();
  await client.waitFor('session.created', () => true, 10_000);
  return client;
}

function pcm16Bytes(samples: Int16Array): Uint8Array {
  return new Uint8Array(samples.buffer, samples.byteOffset, samples.byteLength);
}

function decodePcm16(deltas: string[]): Int16Array {
  const buf = Buffer.concat(deltas.map((d) => Buffer.from(d, 'base64')));
  return new Int16Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength));
}

describe('OpenAI Realtime endpoint with the official openai client', () => {
  it('runs a spoken turn: server VAD, transcription, streamed 24 kHz audio answer, response.done', async () => {
    const client = await connect();
    const created = client.of('session.created')[0];
    expect(created.session.type).toBe('realtime');
    client.rt.send({
      type: 'session.update',
      session: { type: 'realtime', instructions: 'You are a helpful assistant.', audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, turn_detection: { type: 'server_vad' } }, output: { format: { type: 'audio/pcm', rate: 24000 } } } },
    });
    await client.waitFor('session.updated');

    const speech24k = await resampleOnce(askTime16k, 16000, 24000);
    const lastVoiced = lastVoicedFrame(askTime16k);
    const sent = await client.stream(pcm16Bytes(speech24k), 960);
    const lastVoicedSentAt = sent[Math.min(lastVoiced, sent.length - 1)];
    // Keep the microphone open with silence until the answer is done, as a real client does.
    const silence = new Uint8Array(960 * 5);
    const deadline = performance.now() + 20_000;
    while (!client.of('response.done').length && performance.now() < deadline) await client.stream(silence, 960);
    const done = await client.waitFor('response.done');

    const started = client.of('input_audio_buffer.speech_started')[0];
    const stopped = client.of('input_audio_buffer.speech_stopped')[0];
    const committed = client.of('input_audio_buffer.committed')[0];
    expect(started.item_id).toBe(stopped.item_id);
    expect(committed.item_id).toBe(stopped.item_id);
    expect(stopped.audio_end_ms).toBeGreaterThan(started.audio_start_ms);
    const transcript = await client.waitFor('conversation.item.input_audio_transcription.completed');
    expect(transcript.item_id).toBe(committed.item_id);
    expect(transcript.transcript.toLowerCase()).toContain('time');

    expect(done.response.status).toBe('completed');
    const message = done.response.output?.[0];
    expect(message?.type).toBe('message');
    const deltas = client.of('response.output_audio.delta');
    expect(deltas.length).toBeGreaterThan(10);
    expect(deltas.every((d) => d.response_id === done.response.id && d.item_id === message?.id)).toBe(true);
    const audio = decodePcm16(deltas.map((d) => d.delta));
    expect(audio.length).toBeGreaterThan(24000 * 0.5); // over half a second of 24 kHz speech
    expect(rmsDbfs(audio)).toBeGreaterThan(-40);
    const spoken = client.of('response.output_audio_transcript.done')[0];
    expect(spoken.transcript).toMatch(/^It is \d{1,2}:\d{2} [AP]M\.$/); // the server's own get_current_time ran

    // Voice-to-voice as the client hears it: last voiced chunk sent → first audible delta received.
    const firstAudible = client.events.find((e) => e.event.type === 'response.output_audio.delta' && rmsDbfs(decodePcm16([e.event.delta])) > -45);
    const v2v = firstAudible!.at - lastVoicedSentAt;
    console.log(`realtime v2v: ${Math.round(v2v)} ms ("${transcript.transcript}" → "${spoken.transcript}")`);
    expect(v2v).toBeGreaterThan(0);
    expect(client.errors).toEqual([]);
    client.close();
  }, 60_000);

  it('sends a declared tool to the client and speaks the answer built from its output', async () => {
    const client = await connect();
    client.rt.send({
      type: 'session.update',
      session: {
        type: 'realtime',
        tools: [{ type: 'function', name: 'get_current_time', description: 'The time where the caller is.', parameters: { type: 'object', properties: {} } }],
      },
    });
    await client.waitFor('session.updated', (e) => e.session.type === 'realtime' && (e.session.tools?.length ?? 0) === 1);
    // Spoken, so the call also goes through the reply prepared before the turn is confirmed over.
    await client.stream(pcm16Bytes(await resampleOnce(askTime16k, 16000, 24000)), 960);
    const silence = new Uint8Array(960 * 5);
    const deadline = performance.now() + 15_000;
    while (!client.of('response.function_call_arguments.done').length && performance.now() < deadline) await client.stream(silence, 960);

    const call = await client.waitFor('response.function_call_arguments.done');
    expect(call.name).toBe('get_current_time');
    const first = await client.waitFor('response.done');
    expect(first.response.status).toBe('completed');
    expect(first.response.output?.some((i) => i.type === 'function_call' && i.call_id === call.call_id)).toBe(true);
    // Nothing is spoken until the client returns the result.
    await client.stream(silence, 960);
    expect(client.of('response.created').length).toBe(1);
    expect(client.of('response.output_audio.delta')).toEqual([]);

    const since = performance.now();
    client.rt.send({ type: 'conversation.item.create', item: { type: 'function_call_output', call_id: call.call_id, output: JSON.stringify({ time: '4:56 PM', time_24h: '16:56' }) } });
    client.rt.send({ type: 'response.create' });
    const second = await client.waitFor('response.done', (e) => e.response.id !== first.response.id, 15_000, since);
    expect(second.response.status).toBe('completed');
    const spoken = client.of('response.output_audio_transcript.done', since)[0];
    expect(spoken.transcript).toBe('It is 4:56 PM.');
    const audio = decodePcm16(client.of('response.output_audio.delta', since).map((d) => d.delta));
    expect(rmsDbfs(audio)).toBeGreaterThan(-40);
    expect(client.errors).toEqual([]);
    client.close();
  }, 60_000);

  it('cancels the response when the caller talks over it (server VAD barge-in) and truncates on request', async () => {
    const client = await connect();
    client.rt.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'What can you do?' }] } });
    client.rt.send({ type: 'response.create' });
    const created = await client.waitFor('response.created');
    await client.waitFor('response.output_audio.delta');
    // Microphone open (silence), then the caller interrupts.
    await client.stream(new Uint8Array(960 * 25), 960);
    const interruption = await resampleOnce(await speak('Stop. I want to speak to a human please.', { padMs: 0 }), 16000, 24000);
    const sent = await client.stream(pcm16Bytes(interruption), 960);
    const done = await client.waitFor('response.done', (e) => e.response.id === created.response.id);
    expect(done.response.status).toBe('cancelled');
    expect(done.response.status_details).toMatchObject({ type: 'cancelled', reason: 'turn_detected' });
    const started = client.events.find((e) => e.event.type === 'input_audio_buffer.speech_started')!;
    expect(started.at).toBeLessThan(sent.at(-1)!);
    const message = done.response.output?.find((i) => i.type === 'message');
    expect(message?.id).toBeTruthy();
    client.rt.send({ type: 'conversation.item.truncate', item_id: message!.id!, content_index: 0, audio_end_ms: 500 });
    const truncated = await client.waitFor('conversation.item.truncated');
    expect(truncated).toMatchObject({ item_id: message!.id, audio_end_ms: 500 });
    expect(client.errors).toEqual([]);
    client.close();
  }, 60_000);

  it('answers malformed events with error events and keeps the session alive', async () => {
    const client = await connect();
    client.rt.socket.send('{"type": "session.update", ');
    client.rt.send({ type: 'no.such.event', event_id: 'evt_unknown' } as unknown as Parameters<OpenAIRealtimeWS['send']>[0]);
    client.rt.send({ type: 'input_audio_buffer.append', event_id: 'evt_b64', audio: 'not*base64!' });
    client.rt.send({ type: 'input_audio_buffer.append', event_id: 'evt_odd', audio: Buffer.from([1, 2, 3]).toString('base64') });
    client.rt.send({ type: 'session.update', event_id: 'evt_fmt', session: { type: 'realtime', audio: { input: { format: { type: 'audio/flac' } } } } as never });
    client.rt.send({ type: 'response.cancel', event_id: 'evt_cancel' });
    await client.waitFor('error', (e) => e.error.event_id === 'evt_cancel');

    const errors = client.of('error').map((e) => e.error);
    expect(errors[0]).toMatchObject({ type: 'invalid_request_error', code: 'invalid_json', event_id: null });
    expect(errors.find((e) => e.event_id === 'evt_unknown')).toMatchObject({ type: 'invalid_request_error', code: 'invalid_value', param: 'type' });
    expect(errors.find((e) => e.event_id === 'evt_b64')).toMatchObject({ code: 'invalid_value', param: 'audio' });
    expect(errors.find((e) => e.event_id === 'evt_b64')?.message).toContain('base64');
    expect(errors.find((e) => e.event_id === 'evt_odd')).toMatchObject({ code: 'invalid_value', param: 'audio' });
    expect(errors.find((e) => e.event_id === 'evt_fmt')).toMatchObject({ code: 'invalid_value', param: 'session.audio.input.format.type' });
    expect(errors.find((e) => e.event_id === 'evt_cancel')).toMatchObject({ code: 'response_cancel_not_active' });
    // The client library surfaces each as an error too.
    expect(client.errors.length).toBe(errors.length);

    // Still usable.
    client.rt.send({ type: 'session.update', session: { type: 'realtime', instructions: 'Be brief.' } });
    const updated = await client.waitFor('session.updated');
    expect(updated.session.type === 'realtime' && updated.session.instructions).toBe('Be brief.');
    client.close();
  }, 30_000);

  it('paces audio uploaded faster than real time: up to 60 s waits, more is refused, and a clear drops what waits', async () => {
    const client = await connect();
    // 12 messages of 10 s each, sent at once: the pump hands the session a burst and then 10x real time, so the
    // queue fills; the first six always fit, and well before the twelfth the 60 s bound is reached.
    const tenSeconds = Buffer.alloc(24000 * 2 * 10).toString('base64');
    for (let i = 1; i <= 12; i++) client.rt.send({ type: 'input_audio_buffer.append', event_id: `evt_${i}`, audio: tenSeconds });
    client.rt.send({ type: 'input_audio_buffer.clear', event_id: 'evt_clear' });
    await client.waitFor('input_audio_buffer.cleared');
    const overflows = client.of('error').filter((e) => e.error.code === 'input_audio_buffer_overflow');
    expect(overflows.length).toBeGreaterThan(0);
    const refused = overflows.map((e) => Number(e.error.event_id?.slice(4)));
    expect(Math.min(...refused)).toBeGreaterThanOrEqual(7);
    expect(overflows[0].error).toMatchObject({ type: 'invalid_request_error', param: 'audio' });
    console.log(`realtime pacing: 12 x 10 s uploaded at once, messages ${refused.join(', ')} refused (queue bound 60 s)`);
    // After the clear the queue is empty: a new upload is taken again.
    client.rt.send({ type: 'input_audio_buffer.append', event_id: 'evt_after', audio: tenSeconds });
    client.rt.send({ type: 'session.update', session: { type: 'realtime', instructions: 'Be brief.' } });
    await client.waitFor('session.updated');
    expect(client.of('error').filter((e) => e.error.event_id === 'evt_after')).toEqual([]);
    expect(client.of('input_audio_buffer.speech_started')).toEqual([]);
    client.close();
  }, 30_000);

  it('speaks the beta protocol to the beta client (OpenAI-Beta: realtime=v1)', async () => {
    const openai = new OpenAI({ apiKey: TEST_API_KEY, baseURL: `https://127.0.0.1:${proxy.port}/v1` });
    const rt = new BetaRealtimeWS({ model: 'gpt-4o-realtime-preview', options: { ca: proxy.ca } }, openai);
    const events: { type: string; [key: string]: unknown }[] = [];
    rt.on('event', (event) => events.push(event as unknown as { type: string }));
    rt.on('error', (err) => events.push({ type: 'client-error', message: err.message }));
    const waitType = async (type: string) => {
      const deadline = performance.now() + 15_000;
      while (!events.some((e) => e.type === type)) {
        if (performance.now() > deadline) throw new Error(`no ${type}; got ${events.map((e) => e.type).join(', ')}`);
        await sleep(20);
      }
      return events.find((e) => e.type === type)!;
    };
    const created = await waitType('session.created');
    expect(created.session).toMatchObject({ input_audio_format: 'pcm16', output_audio_format: 'pcm16', turn_detection: { type: 'server_vad' } });
    rt.send({ type: 'session.update', session: { input_audio_format: 'g711_ulaw', output_audio_format: 'pcm16' } });
    expect((await waitType('session.updated')).session).toMatchObject({ input_audio_format: 'g711_ulaw' });
    rt.send({ type: 'conversation.item.create', item: { type: 'message', role: 'user', content: [{ type: 'input_text', text: 'What time is it?' }] } });
    await waitType('conversation.item.created');
    rt.send({ type: 'response.create' });
    const done = await waitType('response.done');
    expect(done.response).toMatchObject({ status: 'completed' });
    expect(events.some((e) => e.type === 'response.audio.delta')).toBe(true);
    expect((await waitType('response.audio_transcript.done')).transcript).toMatch(/^It is /);
    expect(events.filter((e) => e.type.startsWith('response.output_audio') || e.type === 'conversation.item.added' || e.type === 'client-error')).toEqual([]);
    rt.close();
  }, 30_000);

  it('refuses a wrong API key before the upgrade, and takes a browser client\'s key subprotocol', async () => {
    const client = new Client('wrong-key');
    const deadline = performance.now() + 10_000;
    while (client.errors.length === 0 && performance.now() < deadline) await sleep(20);
    expect(client.errors[0]?.message).toContain('401');
    expect(client.events).toEqual([]);

    // What openai/realtime/websocket sends from a browser, which cannot set headers.
    const browserLike = new WebSocket(`wss://127.0.0.1:${proxy.port}/v1/realtime?model=gpt-realtime`, ['realtime', `openai-insecure-api-key.${TEST_API_KEY}`], { ca: proxy.ca });
    const first = await new Promise<{ type: string }>((resolve, reject) => {
      browserLike.once('message', (data) => resolve(JSON.parse(String(data)) as { type: string }));
      browserLike.once('error', reject);
    });
    expect(first.type).toBe('session.created');
    expect(browserLike.protocol).toBe('realtime');
    browserLike.close();
  });

  it('takes G.711 µ-law with client-committed turns (turn_detection null) and answers in µ-law', async () => {
    const client = await connect();
    client.rt.send({
      type: 'session.update',
      session: { type: 'realtime', audio: { input: { format: { type: 'audio/pcmu' }, turn_detection: null }, output: { format: { type: 'audio/pcmu' } } } },
    });
    const updated = await client.waitFor('session.updated');
    expect(updated.session.type === 'realtime' && updated.session.audio?.input?.turn_detection).toBeNull();

    const speech8k = await resampleOnce(askTime16k, 16000, 8000);
    await client.stream(encodeMulaw(speech8k), 160);
    await client.stream(new Uint8Array(160 * 25), 160);
    // No server VAD: the turn is still open and nothing was answered.
    expect(client.of('input_audio_buffer.speech_stopped')).toEqual([]);
    expect(client.of('response.created')).toEqual([]);

    client.rt.send({ type: 'input_audio_buffer.commit' });
    client.rt.send({ type: 'response.create' });
    const committed = await client.waitFor('input_audio_buffer.committed');
    const transcript = await client.waitFor('conversation.item.input_audio_transcription.completed');
    expect(transcript.item_id).toBe(committed.item_id);
    const done = await client.waitFor('response.done');
    expect(done.response.status).toBe('completed');
    const bytes = Buffer.concat(client.of('response.output_audio.delta').map((d) => Buffer.from(d.delta, 'base64')));
    expect(bytes.length).toBeGreaterThan(8000 * 0.5); // µ-law: one byte per sample at 8 kHz
    expect(rmsDbfs(decodeMulaw(bytes))).toBeGreaterThan(-40);
    expect(client.errors).toEqual([]);
    client.close();
  }, 60_000);
});
