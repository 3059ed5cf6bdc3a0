import WebSocket from 'ws';
import { StreamingResampler } from '../src/audio/resample.js';
import { closeWebSocket, rejectBeforeStart, parseAgentEvent, UrlCaller, type AgentEvent, type LoadCaller } from './caller.js';

/**
 * A client of the OpenAI-Realtime-compatible endpoint (`/v1/realtime`): 24 kHz PCM16 in base64 events both
 * ways, server VAD. Its events are translated to the device vocabulary the load test reads
 * (transcript.final, response.done, error); the rest pass through under their realtime names.
 */
export class RealtimeCaller extends UrlCaller implements LoadCaller {
  private socket: WebSocket | null = null;
  private up: StreamingResampler | null = null;
  private down: StreamingResampler | null = null;

  async connect(): Promise<void> {
    [this.up, this.down] = await Promise.all([StreamingResampler.create(16000, 24000), StreamingResampler.create(24000, 16000)]);
    const url = new URL(this.url);
    if (!url.searchParams.has('model')) url.searchParams.set('model', 'voice-agent');
    const socket = new WebSocket(url, { headers: this.authorization() });
    this.socket = socket;
    await new Promise<void>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no session.updated within 15 s')), 15_000);
      socket.on('message', (data) => {
        const arrival = performance.now();
        const event = parseAgentEvent(String(data));
        if (!event) return;
        if (event.type === 'session.created') {
          socket.send(
            JSON.stringify({
              type: 'session.update',
              session: { type: 'realtime', audio: { input: { format: { type: 'audio/pcm', rate: 24000 }, turn_detection: { type: 'server_vad' } }, output: { format: { type: 'audio/pcm', rate: 24000 } } } },
            }),
          );
        } else if (event.type === 'session.updated') {
          clearTimeout(timer);
          resolve();
        } else if (event.type === 'response.output_audio.delta' && typeof event.delta === 'string') {
          const bytes = Buffer.from(event.delta, 'base64');
          const pcm24 = new Int16Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength - (bytes.byteLength % 2)));
          const pcm16 = this.down?.process(pcm24);
          if (pcm16 && pcm16.length > 0) this.emitAudio(pcm16, arrival);
          return;
        }
        this.emitEvent(translate(event));
      });
      rejectBeforeStart(socket, timer, reject);
    });
  }

  sendFrame(samples: Int16Array): void {
    if (this.socket?.readyState !== WebSocket.OPEN || !this.up) return;
    const pcm24 = this.up.process(samples);
    if (pcm24.length === 0) return;
    const audio = Buffer.from(pcm24.buffer, pcm24.byteOffset, pcm24.byteLength).toString('base64');
    this.socket.send(JSON.stringify({ type: 'input_audio_buffer.append', audio }));
  }

  async close(): Promise<void> {
    await closeWebSocket(this.socket);
    this.up?.destroy();
    this.down?.destroy();
  }
}

function translate(event: AgentEvent): AgentEvent {
  switch (event.type) {
    case 'conversation.item.input_audio_transcription.completed':
      return { type: 'transcript.final', text: event.transcript, language: '' };
    case 'response.done': {
      const response = event.response as { status?: string; output?: { type?: string; content?: { transcript?: string; text?: string }[] }[] };
      const text = (response.output ?? [])
        .filter((item) => item.type === 'message')
        .flatMap((item) => item.content ?? [])
        .map((part) => part.transcript ?? part.text ?? '')
        .join(' ');
      return { type: 'response.done', text, status: response.status };
    }
    case 'error': {
      const error = event.error as { code?: string; message?: string };
      return { type: 'error', code: error.code, message: error.message };
    }
    default:
      return event;
  }
}
