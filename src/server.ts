import { capabilitiesRoute } from './capabilities.js';
import { describeChatCompletions } from './transports/openai-chat/options.js';
import { describeRealtime } from './transports/realtime/protocol.js';
import { describeSip } from './transports/sip/options.js';
import { describeTelephony } from './transports/telephony/options.js';
import { describeWebRtc } from './transports/webrtc/options.js';
import { describeDeviceWs } from './transports/ws/device-ws.js';
import Fastify, { LogController, type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import websocket from '@fastify/websocket';
import type { Logger } from 'pino';
import type { ServiceConfig } from './config.js';
import { VoiceService } from './service.js';
import type { SessionProviders } from './session/session.js';
import { deviceWebSocket, HARD_MAX_PAYLOAD } from './transports/ws/device-ws.js';
import { realtimeWebSocket } from './transports/realtime/realtime-ws.js';
import { telephonyWebSockets } from './transports/telephony/media-stream.js';
import { tokenRoutes } from './auth/plugin.js';
import { webrtcSignaling } from '../signaling/index.js';
import { adminRoutes, callRoutes } from './store/routes.js';
import { sipTransport } from './transports/sip/index.js';
import { chatCompletionsRoutes } from './transports/openai-chat/index.js';

export interface VoiceServer {
  app: FastifyInstance;
  service: VoiceService;
  /** Listen, then load models in the background (/healthz says when ready). Resolves with the bound port. */
  start(): Promise<number>;
  stop(): Promise<void>;
}

/**
 * Wires HTTP routes and transports around one VoiceService. `providers` replaces the configured ones
 * (tests use it to inject faults); normally they come from the config.
 */
export function buildServer(config: ServiceConfig, logger: Logger, providers?: SessionProviders): VoiceServer {
  const service = new VoiceService(config, logger, providers);
  // Forwarding headers are believed from the configured proxies only (docs/security.md): never by default.
  const app = Fastify({
    loggerInstance: logger as FastifyBaseLogger,
    logController: new LogController({ disableRequestLogging: true }),
    bodyLimit: 1024 * 1024,
    trustProxy: config.trustProxy.length > 0 ? config.trustProxy : false,
  });

  void app.register(websocket, { options: { maxPayload: HARD_MAX_PAYLOAD }, preClose: closeWebSockets });

  // A node that is loading or draining refuses new calls before the WebSocket upgrade or the WebRTC offer, with
  // 503 and Retry-After: a proxy in front (HAProxy, nginx) can then retry the request on another node, which it
  // cannot do once a socket was upgraded and closed.
  app.addHook('onRequest', async (request, reply) => {
    if (service.ready || request.routeOptions.config?.callDoor !== true) return;
    await reply
      .code(503)
      .header('retry-after', '5')
      .send({ error: 'not_ready', message: `the service is ${service.state}; try another node or again shortly` });
  });

  app.get('/healthz', async (_request, reply) => {
    const body = { status: service.state, sessions: service.sessions.size, ...(service.loadError ? { error: service.loadError.message } : {}) };
    return reply.code(service.ready ? 200 : 503).send(body);
  });

  app.get('/metrics', async (request, reply) => {
    // Scrapers on a private network usually need no key; `metricsRequireApiKey` closes it on exposed hosts.
    if (config.metricsRequireApiKey) {
      const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
      if (!bearer || !service.auth.verifyApiKey(bearer)) return reply.code(401).send({ error: 'missing_credentials', message: 'an API key is required for /metrics' });
    }
    const text = await service.metrics.registry.metrics();
    return reply.type(service.metrics.registry.contentType).send(text);
  });

  void app.register(tokenRoutes, { auth: service.auth, agents: service.agents });
  void app.register(callRoutes, { auth: service.auth, store: service.store });
  void app.register(adminRoutes, { auth: service.auth, store: service.store });
  void app.register(deviceWebSocket, { service });
  void app.register(realtimeWebSocket, { service });
  void app.register(telephonyWebSockets, { service });
  void app.register(webrtcSignaling, { service });
  void app.register(sipTransport, { service });
  void app.register(chatCompletionsRoutes, { service });
  void app.register(capabilitiesRoute, {
    service,
    transports: [describeDeviceWs(), describeRealtime(), ...describeTelephony(), describeWebRtc(config.webrtc), describeSip(config.sip), describeChatCompletions(config.chatCompletions)],
  });

  return {
    app,
    service,
    async start() {
      await app.listen({ host: config.host, port: config.port });
      const address = app.server.address();
      const port = typeof address === 'object' && address ? address.port : config.port;
      logger.info({ port }, 'listening; loading models');
      void service.load().catch(() => {
        /* logged by the service; /healthz reports it */
      });
      return port;
    },
    async stop() {
      await app.close();
      await service.close();
    },
  };
}

/** How long a WebSocket peer has to answer our close frame when the server stops before it is cut off. */
export const WS_CLOSE_GRACE_MS = 2000;

/**
 * Stopping: every WebSocket peer is sent a close (1001, going away) and given WS_CLOSE_GRACE_MS to answer, then
 * cut. A peer that stopped reading never answers, and the HTTP server's close waits for its connection: with
 * `ws`'s own 30 s close timeout, one stuck client held up a node's shutdown (and its drain) by 30 s.
 */
function closeWebSockets(this: FastifyInstance, done: () => void): void {
  const clients = [...this.websocketServer.clients];
  const closed = clients.map((client) =>
    client.readyState === client.CLOSED ? Promise.resolve() : new Promise<void>((resolve) => client.once('close', () => resolve())),
  );
  for (const client of clients) client.close(1001, 'server shutting down');
  const cutOff = setTimeout(() => {
    for (const client of clients) if (client.readyState !== client.CLOSED) client.terminate();
  }, WS_CLOSE_GRACE_MS);
  cutOff.unref();
  void Promise.all(closed).then(() => {
    clearTimeout(cutOff);
    this.websocketServer.close();
    done();
  });
}

