import WebSocket from 'ws';

/** A device call held open by the scale-out tests (through a proxy or straight to a node). */
export interface DeviceCall {
  ws: WebSocket;
  callId: string;
  events: Array<Record<string, unknown>>;
}

/**
 * Open a device call on `url` (a /v1/ws URL); resolves at session.started, rejects with the refusal: "refused
 * with HTTP N" before the upgrade, or the `error` event's code (e.g. session_limit) after it. `options`: the ws
 * client's own (e.g. `ca` for a wss:// URL).
 */
export function openDeviceCall(url: string, headers: Record<string, string> = {}, timeoutMs = 5000, options: WebSocket.ClientOptions = {}): Promise<DeviceCall> {
  const ws = new WebSocket(url, { ...options, headers });
  const events: Array<Record<string, unknown>> = [];
  return new Promise<DeviceCall>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`no session.started within ${timeoutMs} ms`)), timeoutMs);
    ws.on('error', reject);
    ws.once('unexpected-response', (_req, res) => {
      clearTimeout(timer);
      ws.terminate();
      reject(new Error(`refused with HTTP ${res.statusCode}`));
    });
    ws.on('message', (data, isBinary) => {
      if (isBinary) return;
      const event = JSON.parse(data.toString()) as Record<string, unknown>;
      events.push(event);
      if (event.type === 'session.started') {
        clearTimeout(timer);
        resolve({ ws, callId: String(event.callId), events });
      } else if (event.type === 'error' && events.every((e) => e.type !== 'session.started')) {
        clearTimeout(timer);
        reject(new Error(String(event.code)));
      }
    });
  });
}

/** Ends a call the way a device does and waits (3 s at most) for the node to close the socket. */
export async function endDeviceCall(call: DeviceCall): Promise<void> {
  if (call.ws.readyState !== WebSocket.OPEN) return;
  const closed = new Promise<void>((r) => call.ws.once('close', () => r()));
  call.ws.send(JSON.stringify({ type: 'session.end' }));
  await Promise.race([closed, new Promise((r) => setTimeout(r, 3000))]);
  call.ws.terminate();
}
