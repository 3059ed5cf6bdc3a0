import { CALL_DOOR } from '../src/core/call-door.js';
import { readFile, readdir } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { requireCaller } from '../src/auth/plugin.js';
import type { VoiceService } from '../src/service.js';
import { OfferError, PeerLimitError, WebRtcTransport } from '../src/transports/webrtc/index.js';
import { notReadyRefusal, refusalOf, reportRefusal, type CallRefusal } from '../src/transports/kit/refusal.js';
import { callerFromClaims } from '../src/integration/context.js';

/**
 * HTTP signaling for browser calls (docs/webrtc.md), the widget's static files under /widget/, and the
 * demo page at /. Offer/answer is non-trickle: the browser gathers its candidates, posts one offer, and
 * gets one answer with the server's candidates in it.
 */

const WIDGET_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'widget');
const CONTENT_TYPES: Record<string, string> = {
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.html': 'text/html; charset=utf-8',
  '.svg': 'image/svg+xml',
  '.png': 'image/png',
  '.json': 'application/json; charset=utf-8',
};
const DEMO_PAGE = 'demo.html';

interface OfferBody {
  sdp: string;
  type: 'offer';
  language?: string;
}

/** 127.0.0.0/8 and ::1, also as IPv4-mapped IPv6. */
export function isLoopback(ip: string): boolean {
  const v4 = ip.startsWith('::ffff:') ? ip.slice(7) : ip;
  return ip === '::1' || /^127\.\d{1,3}\.\d{1,3}\.\d{1,3}$/.test(v4);
}

/** Host header without its port ("[::1]:8080" → "::1"). */
export function hostWithoutPort(host: string): string {
  const bracketed = /^\[([^\]]+)\](?::\d+)?$/.exec(host);
  if (bracketed) return bracketed[1].toLowerCase();
  return host.replace(/:\d+$/, '').toLowerCase();
}

/** Headers a reverse proxy adds: their presence means the socket's loopback address is the proxy's, not the browser's. */
const FORWARDING_HEADERS = ['forwarded', 'x-forwarded-for', 'x-real-ip', 'x-forwarded-host', 'client-ip', 'true-client-ip'];

/**
 * Why a demo request is refused, or null when it comes from a browser on this machine: the client's address
 * (through the configured proxies only) is loopback, no unknown proxy stands in between, and the Host names
 * this machine (a DNS-rebinding page's requests carry the attacker's host name).
 */
export function demoRefusal(request: FastifyRequest, allowedHosts: readonly string[], proxiesTrusted: boolean): string | null {
  if (!isLoopback(request.socket.remoteAddress ?? '')) return 'not a loopback client';
  if (!isLoopback(request.ip)) return 'forwarded for a client that is not on this machine';
  if (!proxiesTrusted && FORWARDING_HEADERS.some((h) => request.headers[h] !== undefined)) return 'came through a reverse proxy that is not in trustProxy';
  const host = hostWithoutPort(request.host ?? '');
  if (!allowedHosts.map((h) => h.toLowerCase()).includes(host)) return 'Host header not in demo.allowedHosts';
  return null;
}

async function loadStaticFiles(): Promise<Map<string, { body: Buffer; type: string }>> {
  const files = new Map<string, { body: Buffer; type: string }>();
  for (const name of await readdir(WIDGET_DIR)) {
    const type = CONTENT_TYPES[path.extname(name)];
    if (type) files.set(name, { body: await readFile(path.join(WIDGET_DIR, name)), type });
  }
  return files;
}

export const webrtcSignaling: FastifyPluginAsync<{ service: VoiceService }> = async (app, { service }) => {
  const transport = new WebRtcTransport(service);
  const config = service.config;
  const allowAny = config.webrtc.corsOrigins.includes('*');
  const files = await loadStaticFiles();
  app.addHook('onClose', async () => transport.close());

  // Pages on other origins (the site embedding the widget) may call the signaling routes when allowed.
  const cors = async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const origin = request.headers.origin;
    if (!origin || !(allowAny || config.webrtc.corsOrigins.includes(origin))) return;
    void reply.header('access-control-allow-origin', allowAny ? '*' : origin);
    void reply.header('vary', 'Origin');
    void reply.header('access-control-allow-headers', 'authorization, content-type');
    void reply.header('access-control-allow-methods', 'GET, POST, DELETE, OPTIONS');
    void reply.header('access-control-max-age', '600');
  };
  app.addHook('onRequest', cors);

  /** A call refused by admission (or not ready to be taken), in HTTP's words: the kit's table. */
  const refuse = (reply: FastifyReply, refusal: CallRefusal) => {
    if (refusal.retryAfterS !== undefined) void reply.header('retry-after', String(refusal.retryAfterS));
    return reply.code(refusal.http).send({ error: refusal.code, message: refusal.message });
  };
  const preflight = async (_request: FastifyRequest, reply: FastifyReply) => reply.code(204).send();
  app.options('/v1/webrtc/offer', preflight);
  app.options('/v1/webrtc/sessions/:id', preflight);

  app.post<{ Body: OfferBody }>(
    '/v1/webrtc/offer',
    {
      config: CALL_DOOR,
      preValidation: requireCaller(service.auth),
      schema: {
        body: {
          type: 'object',
          required: ['sdp', 'type'],
          additionalProperties: false,
          properties: {
            sdp: { type: 'string', minLength: 1, maxLength: 65536 },
            type: { type: 'string', const: 'offer' },
            language: { type: 'string', pattern: '^[a-z]{2,3}(-[A-Za-z0-9]+)*$' },
          },
        },
      },
    },
    async (request, reply) => {
      // Before a peer connection is built for nothing.
      if (!service.ready) return refuse(reply, notReadyRefusal(service.state));
      try {
        const { sessionId, sdp } = await transport.accept(request.body.sdp, {
          language: request.body.language,
          owner: request.principal?.keyId ?? 'anonymous',
          caller: callerFromClaims(request.principal),
        });
        return { type: 'answer', sdp, sessionId };
      } catch (err) {
        // WebRTC's own: the client's SDP, and this node's cap on peers and offers in negotiation.
        if (err instanceof OfferError) return reply.code(400).send({ error: err.code, message: err.message });
        if (err instanceof PeerLimitError) return reply.code(503).header('retry-after', String(err.retryAfterS)).send({ error: 'session_limit', message: err.message });
        // Admission's refusals (the key's limits, an unknown agent or number) and our faults, as on every wire.
        const refusal = refusalOf(err);
        reportRefusal(refusal, err, request.log, service.metrics);
        return refuse(reply, refusal);
      }
    },
  );

  app.delete<{ Params: { id: string } }>(
    '/v1/webrtc/sessions/:id',
    {
      preValidation: requireCaller(service.auth),
      schema: { params: { type: 'object', properties: { id: { type: 'string', pattern: '^[0-9a-f-]{36}$' } } } },
    },
    async (request, reply) => {
      const ended = await transport.hangup(request.params.id, request.principal?.keyId ?? 'anonymous');
      if (!ended) return reply.code(404).send({ error: 'not_found', message: 'no such WebRTC session' });
      return reply.code(204).send();
    },
  );

  // Browsers must never hold an API key: the demo page asks for a short-lived token, from this machine only.
  const proxiesTrusted = config.trustProxy.length > 0;
  if (config.demo.enabled) service.logger.warn({ allowedHosts: config.demo.allowedHosts }, 'demo mode: GET /v1/demo/token gives session tokens to browsers on this machine (never enable it on a server)');
  app.get('/v1/demo/token', async (request, reply) => {
    if (!config.demo.enabled) return reply.code(404).send({ error: 'not_found', message: 'the demo is disabled (start with --demo or demo.enabled=true on a developer machine)' });
    const refusal = demoRefusal(request, config.demo.allowedHosts, proxiesTrusted);
    if (refusal) {
      request.log.warn({ ip: request.ip, reason: refusal }, 'demo token refused');
      return reply.code(403).send({ error: 'forbidden', message: `demo tokens are only given to browsers on this machine (${refusal}); a production page gets its token from its own backend (POST /v1/tokens)` });
    }
    const { token, expiresAt } = await service.auth.mintToken({ kind: 'api_key', keyId: 'demo' });
    return { token, expires_at: expiresAt, token_type: 'Bearer' };
  });

  app.get<{ Params: { file: string } }>('/widget/:file', async (request, reply) => {
    const file = files.get(request.params.file);
    if (!file || request.params.file === DEMO_PAGE) return reply.code(404).send({ error: 'not_found', message: 'no such widget file' });
    // Public files: any page may load the widget module (module scripts are fetched with CORS).
    return reply.type(file.type).header('cache-control', 'no-cache').header('access-control-allow-origin', '*').send(file.body);
  });
  app.get('/widget/', async (_request, reply) => reply.redirect('/'));

  app.get('/', async (_request, reply) => {
    const page = files.get(DEMO_PAGE);
    if (!config.demo.enabled || !page) return reply.code(404).send({ error: 'not_found', message: 'the demo page is disabled (start with --demo or demo.enabled=true on a developer machine)' });
    return reply.type(page.type).header('cache-control', 'no-cache').send(page.body);
  });
};
