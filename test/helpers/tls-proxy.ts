import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { promisify } from 'node:util';

const run = promisify(execFile);

export interface TlsProxy {
  port: number;
  /** The self-signed certificate (PEM), for the client's `ca`. */
  ca: string;
  close(): Promise<void>;
}

/**
 * A TLS-terminating TCP proxy on 127.0.0.1 in front of a plain-HTTP test server, with a throwaway
 * self-signed certificate: what a reverse proxy does in production. The official openai realtime client
 * always connects with wss://, so it needs this to reach a test server.
 */
export async function startTlsProxy(targetPort: number): Promise<TlsProxy> {
  const dir = await mkdtemp(path.join(tmpdir(), 'tls-proxy-'));
  let cert: string;
  let key: string;
  try {
    await run('openssl', [
      'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1',
      '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1',
      '-keyout', path.join(dir, 'key.pem'), '-out', path.join(dir, 'cert.pem'),
    ]);
    [cert, key] = await Promise.all([readFile(path.join(dir, 'cert.pem'), 'utf8'), readFile(path.join(dir, 'key.pem'), 'utf8')]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  const sockets = new Set<net.Socket>();
  const server = tls.createServer({ cert, key }, (client) => {
    const upstream = net.connect(targetPort, '127.0.0.1');
    sockets.add(client);
    sockets.add(upstream);
    client.pipe(upstream).pipe(client);
    const end = () => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', end).on('close', end);
    upstream.on('error', end).on('close', end);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const address = server.address();
  const port = typeof address === 'object' && address ? address.port : 0;
  return {
    port,
    ca: cert,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}
