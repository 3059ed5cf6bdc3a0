/** A call's WebSocket wired to its connection, the same way on every WebSocket door. */
import type { RawData, WebSocket } from 'ws';

export interface SocketConnection {
  onMessage(data: RawData, isBinary: boolean): void;
  close(): Promise<void>;
}

/**
 * Messages go to the connection (one that throws is logged: bad input never ends the process or another
 * call), a close ends the call, and socket errors are logged with the call's logger.
 */
export function serveSocket(socket: WebSocket, connection: SocketConnection, log: { error(obj: object, msg: string): void; warn(obj: object, msg: string): void }, what: string): void {
  socket.on('message', (data, isBinary) => {
    try {
      connection.onMessage(data, isBinary);
    } catch (err) {
      log.error({ err }, `${what} message handling failed`);
    }
  });
  socket.on('close', () => void connection.close());
  socket.on('error', (err) => log.warn({ err }, `${what} socket error`));
}
