/**
 * `GET /v1/capabilities`: what this node runs and accepts, from what each provider and transport declares
 * beside its code (src/providers/capabilities.ts, src/transports/kit/describe.ts). `offMachine` names the stages
 * whose input leaves this process for a server: what a reviewer checks against where that server is.
 */
import type { FastifyPluginAsync } from 'fastify';
import { requireApiKey } from './auth/plugin.js';
import type { ProviderCapabilities } from './providers/capabilities.js';
import type { VoiceService } from './service.js';
import type { TransportDescription } from './transports/kit/describe.js';

interface StageDescription extends ProviderCapabilities {
  provider: string;
  languages?: readonly string[];
}

export interface CapabilitiesOptions {
  service: VoiceService;
  /** Each transport's own description (src/transports/*: `describe…`), for this node's configuration. */
  transports: readonly TransportDescription[];
}

export const capabilitiesRoute: FastifyPluginAsync<CapabilitiesOptions> = async (app, { service, transports }) => {
  app.get('/v1/capabilities', { preValidation: requireApiKey(service.auth) }, async () => {
    const { vad, asr, llm, tts } = service.providers;
    const stage = (provider: { name: string; capabilities: ProviderCapabilities; languages?: readonly string[] }): StageDescription => ({
      provider: provider.name,
      ...(provider.languages ? { languages: provider.languages } : {}),
      runsOn: provider.capabilities.runsOn,
      streaming: provider.capabilities.streaming,
    });
    const stages = { vad: stage(vad), asr: stage(asr), llm: stage(llm), tts: stage(tts) };
    return {
      status: service.state,
      agents: service.agents.names,
      stages,
      offMachine: Object.entries(stages)
        .filter(([, s]) => s.runsOn.includes('server'))
        .map(([name]) => name),
      transports,
    };
  });
};
