import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import http from 'node:http';
import net from 'node:net';
import os, { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../src/config.js';
import { startTestServer, type TestServer } from './helpers/server.js';
import { NGINX, writeNginxConfig } from './helpers/nginx.js';

/**
 * Issue 10, `/v1/demo/token`: off unless asked for, and when on, only for a browser on this machine — through a
 * real reverse proxy (Debian's nginx, unprivileged on a loopback port) as the docs deploy it, with and without
 * the proxy declared in `trustProxy`, and against DNS rebinding (a foreign Host).
 */
/** An address of this machine that is not loopback: a client from there is "not on this machine" for the demo. */
const EXTERNAL = Object.values(os.networkInterfaces())
  .flat()
  .find((a) => a && a.family === 'IPv4' && !a.internal)?.address;

let plain: TestServer;
let demo: TestServer;
let demoUntrusting: TestServer;

interface Nginx {
  port: number;
  stop(): Promise<void>;
}

async function freePort(): Promise<number> {
  const srv = net.createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', () => r()));
  const port = (srv.address() as net.AddressInfo).port;
  await new Promise<void>((r) => srv.close(() => r()));
  return port;
}

/** nginx in front of `upstream`, configured as docs/security.md recommends (Host and X-Forwarded-* passed on). */
async function startNginx(upstream: number): Promise<Nginx> {
  const dir = await mkdtemp(path.join(tmpdir(), 'nginx-test-'));
  const port = await freePort();
  const listen = [`listen 127.0.0.1:${port};`, ...(EXTERNAL ? [`listen ${EXTERNAL}:${port};`] : [])].join('\n      ');
  const args = await writeNginxConfig(
    dir,
    `  server {
      ${listen}
      location / {
        proxy_pass http://127.0.0.1:${upstream};
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
        proxy_set_header X-Forwarded-Proto $scheme;
      }
  }`,
  );
  const child: ChildProcess = spawn(NGINX!, args, { stdio: 'ignore' });
  const exited = new Promise<void>((r) => child.once('exit', () => r()));
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, '127.0.0.1', () => {
        socket.destroy();
        resolve(true);
      });
      socket.once('error', () => resolve(false));
    });
    if (up) break;
    if (i > 100) throw new Error('nginx did not start');
    await new Promise((r) => setTimeout(r, 50));
  }
  return {
    port,
    stop: async () => {
      child.kill('SIGTERM');
      await exited;
      await rm(dir, { recursive: true, force: true });
    },
  };
}

/** GET with a chosen Host header and source address (fetch does not let a test set either). */
function get(port: number, urlPath: string, options: { host?: string; address?: string; localAddress?: string; headers?: Record<string, string> } = {}): Promise<{ status: number; body: string }> {
  return new Promise((resolve, reject) => {
    const req = http.request(
      { host: options.address ?? '127.0.0.1', port, path: urlPath, localAddress: options.localAddress, headers: { host: options.host ?? `127.0.0.1:${port}`, ...options.headers } },
      (res) => {
        let body = '';
        res.on('data', (d: Buffer) => (body += d.toString('utf8')));
        res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
      },
    );
    req.on('error', reject);
    req.end();
  });
}

beforeAll(async () => {
  [plain, demo, demoUntrusting] = await Promise.all([
    startTestServer({ sip: { enabled: false } }),
    startTestServer({ sip: { enabled: false }, demo: { enabled: true }, trustProxy: ['127.0.0.1'] }),
    startTestServer({ sip: { enabled: false }, demo: { enabled: true } }),
  ]);
});

afterAll(async () => {
  await Promise.allSettled([plain?.stop(), demo?.stop(), demoUntrusting?.stop()]);
});

describe('demo tokens', () => {
  it('are off by default, and on with --demo / VOICE_AGENT_DEMO=1', async () => {
    expect((await get(plain.port, '/v1/demo/token')).status).toBe(404);
    expect((await get(plain.port, '/')).status).toBe(404);
    expect(loadConfig([], {}).demo.enabled).toBe(false);
    expect(loadConfig(['--demo'], {}).demo.enabled).toBe(true);
    expect(loadConfig([], { VOICE_AGENT_DEMO: '1' }).demo.enabled).toBe(true);
  });

  it('in demo mode: a browser on this machine gets one; a foreign Host (DNS rebinding) does not', async () => {
    const local = await get(demo.port, '/v1/demo/token');
    expect(local.status).toBe(200);
    expect(JSON.parse(local.body)).toMatchObject({ token_type: 'Bearer' });
    expect((await get(demo.port, '/v1/demo/token', { host: `localhost:${demo.port}` })).status).toBe(200);
    const rebound = await get(demo.port, '/v1/demo/token', { host: `attacker.example:${demo.port}` });
    expect(rebound.status).toBe(403);
    expect(rebound.body).toMatch(/allowedHosts/);
  });

  describe.skipIf(!NGINX)('behind nginx on the same host', () => {
    let front: Nginx;
    let frontUntrusted: Nginx;
    beforeAll(async () => {
      [front, frontUntrusted] = await Promise.all([startNginx(demo.port), startNginx(demoUntrusting.port)]);
    });
    afterAll(async () => {
      await Promise.allSettled([front?.stop(), frontUntrusted?.stop()]);
    });

    it('a request for the public site name is refused, even though the socket the service sees is loopback', async () => {
      const res = await get(front.port, '/v1/demo/token', { host: 'voice.example.com' });
      expect(res.status).toBe(403);
    });

    it.skipIf(!EXTERNAL)('a client that is not on this machine is refused through a trusted proxy (X-Forwarded-For)', async () => {
      // Connect to nginx on the machine's non-loopback address, from it: nginx forwards for a non-loopback client.
      const res = await get(front.port, '/v1/demo/token', { address: EXTERNAL, localAddress: EXTERNAL, host: '127.0.0.1' });
      expect(res.status).toBe(403);
      expect(res.body).toMatch(/not on this machine/);
      // The same proxy passes a browser on this machine.
      expect((await get(front.port, '/v1/demo/token', { host: '127.0.0.1' })).status).toBe(200);
    });

    it('a proxy the service was not told about (no trustProxy) gets nothing, whatever the client', async () => {
      const res = await get(frontUntrusted.port, '/v1/demo/token', { host: '127.0.0.1' });
      expect(res.status).toBe(403);
      expect(res.body).toMatch(/trustProxy/);
      // A spoofed X-Forwarded-For straight to the service changes nothing either.
      const spoofed = await get(demoUntrusting.port, '/v1/demo/token', { headers: { 'x-forwarded-for': '127.0.0.1' } });
      expect(spoofed.status).toBe(403);
    });
  });

  it.skipIf(NGINX)('(nginx is not installed: `apt-get install nginx` or scripts/setup.sh --test runs the reverse-proxy cases)', () => {
    expect(NGINX).toBeUndefined();
  });
});
