import WebSocket from 'ws';
import { closeWebSocket, rejectBeforeStart, parseAgentEvent, UrlCaller, type LoadCaller } from './caller.js';

/** A device on the `/v1/ws` protocol, PCM16 at 16 kHz both ways. */
export class WsCaller extends UrlCaller implements LoadCaller {
  private socket: WebSocket | null = null;

  connect(): Promise<void> {
    const url = new URL(this.url);
    if (!url.searchParams.has('codec')) url.searchParams.set('codec', 'pcm16');
    if (!url.searchParams.has('rate')) url.searchParams.set('rate', '16000');
    const socket = new WebSocket(url, { headers: this.authorization() });
    this.socket = socket;
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no session.started within 15 s')), 15_000);
      socket.on('message', (data, isBinary) => {
        const arrival = performance.now();
        if (isBinary) {
          const buf = data as Buffer;
          const samples = new Int16Array(buf.buffer.slice(buf.byteOffset, buf.byteOffset + buf.byteLength - (buf.byteLength % 2)));
          this.emitAudio(samples, arrival);
          return;
        }
        const event = parseAgentEvent(String(data));
        if (!event) return;
        if (event.type === 'session.started') {
          clearTimeout(timer);
          resolve();
        }
        if (event.type === 'error' && event.code === 'not_ready') {
          clearTimeout(timer);
          reject(new Error(`service not ready: ${String(event.message)}`));
        }
        this.emitEvent(event);
      });
      rejectBeforeStart(socket, timer, reject);
    });
  }

  sendFrame(samples: Int16Array): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(Buffer.from(samples.buffer, samples.byteOffset, samples.byteLength));
  }

  /** A JSON control message (input.text, input.dtmf, …). */
  sendControl(message: Record<string, unknown>): void {
    if (this.socket?.readyState === WebSocket.OPEN) this.socket.send(JSON.stringify(message));
  }

  close(): Promise<void> {
    return closeWebSocket(this.socket);
  }
}
