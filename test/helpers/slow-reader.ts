import net from 'node:net';
import koffi from 'koffi';
import WebSocket from 'ws';
import type { TestServer } from './server.js';

/**
 * Kernel buffers the size of a real network's, for a peer that stops reading. On loopback the kernel sizes
 * the server's send buffer for a 64 KiB MSS and grows it as the call goes (measured: 0.5-4 MB absorbed
 * before the server's `ws` buffers a byte), so a paused client would take minutes to show anything. The
 * client gets a 1400-byte MSS and an 8 KiB receive buffer (set before connect, which Node cannot do); the
 * test server's accepted sockets get a fixed 4 KiB send buffer. Then a paused reader fills in ~50 KB.
 */
const libc = koffi.load('libc.so.6');
const socketFn = libc.func('int socket(int domain, int type, int protocol)');
const setsockopt = libc.func('int setsockopt(int fd, int level, int name, int *value, uint32_t len)');
const SockaddrIn = koffi.struct('slow_reader_sockaddr_in', { family: 'uint16', port: 'uint16', addr: 'uint32', zero: koffi.array('uint8', 8) });
const connectFn = libc.func('int connect(int fd, const slow_reader_sockaddr_in *addr, uint32_t len)');
const closeFn = libc.func('int close(int fd)');

const AF_INET = 2;
const SOCK_STREAM = 1;
const SOL_SOCKET = 1;
const SO_SNDBUF = 7;
const SO_RCVBUF = 8;
const IPPROTO_TCP = 6;
const TCP_MAXSEG = 2;

/** A TCP connection to 127.0.0.1:`port` with a network-sized MSS and a small receive buffer. */
export function smallBufferSocket(port: number): net.Socket {
  const fd = socketFn(AF_INET, SOCK_STREAM, 0);
  if (fd < 0) throw new Error('socket() failed');
  const ok = setsockopt(fd, IPPROTO_TCP, TCP_MAXSEG, [1400], 4) === 0 && setsockopt(fd, SOL_SOCKET, SO_RCVBUF, [8192], 4) === 0;
  // Network byte order: the port and 127.0.0.1 as big-endian numbers read on a little-endian host.
  const address = { family: AF_INET, port: ((port & 0xff) << 8) | (port >> 8), addr: 0x0100007f, zero: [0, 0, 0, 0, 0, 0, 0, 0] };
  if (!ok || connectFn(fd, address, koffi.sizeof(SockaddrIn)) !== 0) {
    closeFn(fd);
    throw new Error('could not open a small-buffer connection');
  }
  return new net.Socket({ fd, readable: true, writable: true });
}

/** Every connection the test server accepts from now on gets a small fixed send buffer. */
export function smallServerSendBuffers(server: TestServer): void {
  server.server.app.server.on('connection', (socket: net.Socket) => {
    const fd = (socket as unknown as { _handle?: { fd?: number } })._handle?.fd;
    if (fd === undefined || fd < 0 || setsockopt(fd, SOL_SOCKET, SO_SNDBUF, [4096], 4) !== 0) throw new Error('could not set SO_SNDBUF');
  });
}

/** A WebSocket to the test server over `smallBufferSocket`; `pause()` then stops reading for real. */
export function slowReaderWebSocket(server: TestServer, path: string, headers: Record<string, string> = {}): WebSocket {
  return new WebSocket(`ws://127.0.0.1:${server.port}${path}`, { headers, createConnection: () => smallBufferSocket(server.port) });
}

/** The largest `bufferedAmount` among the server's WebSocket connections right now. */
export function serverBufferedMax(server: TestServer): number {
  let max = 0;
  for (const client of server.server.app.websocketServer.clients) max = Math.max(max, client.bufferedAmount);
  return max;
}

/** voice_agent_audio_frames_dropped_total for one transport, from the server's /metrics. */
export async function droppedFrames(server: TestServer, transport: string): Promise<number> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`voice_agent_audio_frames_dropped_total{transport="${transport}"}`));
  return line ? Number(line.split(' ').at(-1)) : 0;
}
