/**
 * Native SIP + RTP transport as a Fastify plugin: the SIP listeners start when the app is ready and stop
 * when it closes. docs/sip.md describes configuration, trunks and NAT.
 */
import type { FastifyInstance, FastifyPluginAsync } from 'fastify';
import type { VoiceService } from '../../service.js';
import { SipServer } from './uas.js';

export { SipServer } from './uas.js';

export interface SipTransportOptions {
  service: VoiceService;
}

const servers = new WeakMap<VoiceService, SipServer>();

/** The running SIP server of a service (null when disabled or not started): tests and tools read its port. */
export function sipServerOf(service: VoiceService): SipServer | null {
  return servers.get(service) ?? null;
}

export const sipTransport: FastifyPluginAsync<SipTransportOptions> = async (app: FastifyInstance, { service }) => {
  const config = service.config.sip;
  if (!config?.enabled) return;
  // Configuration errors (bad CIDR, bad port range) stop the service here, at start, with a clear message.
  const server = new SipServer({ service, config, logger: service.logger });
  app.addHook('onReady', async () => {
    try {
      await server.start();
      servers.set(service, server);
    } catch (err) {
      // A taken port must not take the HTTP service down with it.
      service.logger.error({ err, host: config.host, port: config.port }, 'SIP transport could not start; phone calls over SIP are unavailable');
    }
  });
  app.addHook('onClose', async () => {
    servers.delete(service);
    await server.stop();
  });
};
