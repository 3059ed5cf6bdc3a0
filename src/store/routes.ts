import type { FastifyPluginAsync } from 'fastify';
import type { Auth } from '../auth/auth.js';
import type { CallStore } from './call-store.js';

/**
 * `GET /v1/calls/:id`: a call's transcript and turn metrics. API keys only (session tokens are for callers),
 * and only the key that placed the call (or minted the token it was placed with): another key gets 404.
 */
export const callRoutes: FastifyPluginAsync<{ auth: Auth; store: CallStore }> = async (app, { auth, store }) => {
  app.get<{ Params: { id: string } }>(
    '/v1/calls/:id',
    { schema: { params: { type: 'object', properties: { id: { type: 'string', minLength: 1, maxLength: 128 } }, required: ['id'] } } },
    async (request, reply) => {
      let owner = 'anonymous';
      if (auth.required) {
        const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
        const principal = bearer ? auth.verifyApiKey(bearer) : null;
        if (!principal) {
          request.log.warn({ ip: request.ip }, 'call record request without a valid API key');
          return reply.code(401).send({ error: bearer ? 'invalid_credentials' : 'missing_credentials', message: 'an API key is required' });
        }
        owner = principal.keyId;
      }
      const record = store.get(request.params.id, owner);
      if (!record) return reply.code(404).send({ error: 'not_found', message: `no call ${request.params.id}` });
      return record;
    },
  );
};
