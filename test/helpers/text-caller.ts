/**
 * A caller that types (input.text) or keys (input.dtmf) its turns over the device WebSocket and waits for each
 * reply. A text client by default (`replies=text`: no synthesis, no real-time playout, so dialogue tests run in
 * a fraction of the time); `{ spoken: true }` hears the replies as audio, played in real time.
 */
import WebSocket from 'ws';

export type Event = Record<string, unknown>;

export class TextCaller {
  readonly events: Event[] = [];
  /** Binary (agent audio) messages received. */
  audioMessages = 0;
  private readonly ws: WebSocket;

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
      await new Promise((r) => setTimeout(r, 20));
    }
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
