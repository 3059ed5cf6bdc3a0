import WebSocket from 'ws';

/**
 * A load-test caller is one transport's client: it sends caller audio (internal 16 kHz PCM16 frames) and
 * reports agent audio and agent events back. One module per transport implements this.
 */
export interface AgentEvent {
  type: string;
  [key: string]: unknown;
}

export interface LoadCaller {
  /** Connect and wait until the service has started the session. */
  connect(): Promise<void>;
  /** One 20 ms frame of 16 kHz mono PCM16 caller audio. */
  sendFrame(samples: Int16Array): void;
  /** Agent audio as 16 kHz mono PCM16, with its arrival time (performance.now()). */
  onAudio(listener: (samples: Int16Array, arrivalMs: number) => void): void;
  /** Agent events (the device protocol's vocabulary). */
  onEvent(listener: (event: AgentEvent) => void): void;
  close(): Promise<void>;
}

/** The listener bookkeeping every LoadCaller shares: transports call emitAudio / emitEvent. */
export abstract class CallerListeners {
  private readonly audioListeners: ((samples: Int16Array, arrivalMs: number) => void)[] = [];
  private readonly eventListeners: ((event: AgentEvent) => void)[] = [];

  onAudio(listener: (samples: Int16Array, arrivalMs: number) => void): void {
    this.audioListeners.push(listener);
  }

  onEvent(listener: (event: AgentEvent) => void): void {
    this.eventListeners.push(listener);
  }

  protected emitAudio(samples: Int16Array, arrivalMs: number): void {
    for (const listener of this.audioListeners) listener(samples, arrivalMs);
  }

  protected emitEvent(event: AgentEvent): void {
    for (const listener of this.eventListeners) listener(event);
  }
}

/** A caller that dials one URL. `credential`: an API key or a session token, sent as `Authorization: Bearer`. */
export abstract class UrlCaller extends CallerListeners {
  constructor(
    protected readonly url: string,
    protected readonly credential?: string,
  ) {
    super();
  }

  /** The Authorization header for the credential, if there is one. */
  protected authorization(): { authorization?: string } {
    return this.credential ? { authorization: `Bearer ${this.credential}` } : {};
  }
}

/** One agent event from a text message; null for one that is not JSON (ignored, as a client would). */
export function parseAgentEvent(text: string): AgentEvent | null {
  try {
    return JSON.parse(text) as AgentEvent;
  } catch {
    return null;
  }
}

/** Close a caller's WebSocket politely (`goodbye` first, if the protocol has one); gives up waiting after 2 s. */
export async function closeWebSocket(socket: WebSocket | null, goodbye?: () => void): Promise<void> {
  if (!socket || socket.readyState === WebSocket.CLOSED) return;
  await new Promise<void>((resolve) => {
    socket.once('close', () => resolve());
    if (socket.readyState === WebSocket.OPEN) goodbye?.();
    socket.close(1000);
    setTimeout(resolve, 2000).unref();
  });
}

/** Until the session has started, a socket error, an HTTP refusal or a close fails the connect (and its timer stops). */
export function rejectBeforeStart(socket: WebSocket, timer: NodeJS.Timeout, reject: (err: Error) => void): void {
  socket.on('error', (err) => {
    clearTimeout(timer);
    reject(err);
  });
  socket.on('unexpected-response', (_request, response) => {
    clearTimeout(timer);
    reject(new Error(`connection refused: HTTP ${response.statusCode}`));
  });
  socket.on('close', (code) => {
    clearTimeout(timer);
    reject(new Error(`socket closed (${code}) before the session started`));
  });
}
