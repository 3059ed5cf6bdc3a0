/**
 * A caller that types (input.text) or keys (input.dtmf) its turns over the device WebSocket and waits for each
 * reply. A text client by default (`replies=text`: no synthesis, no real-time playout, so dialogue tests run in
 * a fraction of the time); `{ spoken: true }` hears the replies as audio, played in real time. SpeakingCaller
 * also talks: 16 kHz PCM at real-time pace, and silence while it waits, as a real caller's microphone sends.
 */
import WebSocket from 'ws';
import { FRAME_SAMPLES } from '../../src/audio/format.js';
import { TEST_API_KEY } from './server.js';

export type Event = Record<string, unknown>;

export class TextCaller {
  readonly events: Event[] = [];
  /** Binary (agent audio) messages received. */
  audioMessages = 0;
  protected readonly ws: WebSocket;

  /** `auth`: an API key sent as a Bearer header, or a session token put in the URL. */
  constructor(url: string, auth: { apiKey: string } | { token: string }, options: { spoken?: boolean } = {}) {
    if (!options.spoken) url = `${url}${url.includes('?') ? '&' : '?'}replies=text`;
    this.ws =
      'token' in auth
        ? new WebSocket(`${url}${url.includes('?') ? '&' : '?'}token=${encodeURIComponent(auth.token)}`)
        : new WebSocket(url, { headers: { authorization: `Bearer ${auth.apiKey}` } });
    this.ws.on('message', (data, isBinary) => {
      if (!isBinary) this.events.push(JSON.parse(String(data)) as Event);
      else this.audioMessages++;
    });
  }

  async open(): Promise<string> {
    await new Promise<void>((resolve, reject) => {
      this.ws.once('open', () => resolve());
      this.ws.once('error', reject);
    });
    return String((await this.waitFor((e) => e.type === 'session.started')).callId);
  }

  async waitFor(predicate: (e: Event) => boolean, since = 0, timeoutMs = 20_000): Promise<Event> {
    const deadline = performance.now() + timeoutMs;
    for (;;) {
      const found = this.events.slice(since).find(predicate);
      if (found) return found;
      if (performance.now() > deadline) throw new Error(`timed out; events: ${JSON.stringify(this.events.slice(since).map((e) => e.type))}`);
      await this.idle();
    }
  }

  /** What the caller does between looks at its events. */
  protected async idle(): Promise<void> {
    await sleep(20);
  }

  /** Type a turn; resolves with the reply's text and the turn's events once the reply is done. */
  say(text: string): Promise<{ text: string; events: Event[] }> {
    return this.turn(() => this.ws.send(JSON.stringify({ type: 'input.text', text })));
  }

  /** Key digits then `#`; resolves like say(). */
  keypad(digits: string): Promise<{ text: string; events: Event[] }> {
    return this.turn(() => {
      for (const digit of [...digits, '#']) this.ws.send(JSON.stringify({ type: 'input.dtmf', digit }));
    });
  }

  private async turn(send: () => void): Promise<{ text: string; events: Event[] }> {
    const since = this.events.length;
    send();
    const done = await this.waitFor((e) => e.type === 'response.done', since);
    return { text: String(done.text), events: this.events.slice(since) };
  }

  close(): Promise<void> {
    return new Promise((resolve) => {
      if (this.ws.readyState === WebSocket.CLOSED) return resolve();
      this.ws.once('close', () => resolve());
      this.ws.close();
    });
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A caller with a microphone (pcm16 at 16 kHz, the test key): it can still type, and hears replies as audio. */
export class SpeakingCaller extends TextCaller {
  private next = 0;

  constructor(url: string) {
    super(`${url}?codec=pcm16&rate=16000`, { apiKey: TEST_API_KEY }, { spoken: true });
  }

  /** Real callers send audio all the time: silence while waiting. */
  protected override async idle(): Promise<void> {
    if (this.ws.readyState === WebSocket.OPEN) await this.stream(new Int16Array(FRAME_SAMPLES * 5));
    else await sleep(20);
  }

  /** 16 kHz PCM in 20 ms frames at real-time pace. */
  async stream(pcm: Int16Array): Promise<void> {
    if (this.next < performance.now() - 100) this.next = performance.now();
    for (let offset = 0; offset < pcm.length; offset += FRAME_SAMPLES) {
      const frame = new Int16Array(FRAME_SAMPLES);
      frame.set(pcm.subarray(offset, offset + FRAME_SAMPLES));
      this.next += 20;
      const wait = this.next - performance.now();
      if (wait > 1) await sleep(wait);
      this.ws.send(Buffer.from(frame.buffer));
    }
  }

  /** Type a turn without waiting for the reply. */
  text(text: string): void {
    this.ws.send(JSON.stringify({ type: 'input.text', text }));
  }
}
