import type { FastifyPluginAsync, FastifyReply, FastifyRequest } from 'fastify';
import { AuthError, MAX_TOKEN_TTL_S, type Auth, type Principal } from './auth.js';
import { MAX_CALLER_VARS, MAX_VAR_VALUE, tokenVarProblems, VAR_NAME_PATTERN } from '../integration/context.js';

declare module 'fastify' {
  interface FastifyRequest {
    principal?: Principal;
  }
}

/**
 * A preValidation hook that admits a request with an API key or session token (Bearer header or ?token=),
 * and answers 401/403 before a WebSocket upgrade or handler runs otherwise. The log line names the reason,
 * never the credential.
 */
export function requireCaller(auth: Auth) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const query = request.query as Record<string, string | undefined> | undefined;
    try {
      request.principal = await auth.authenticate({ authorization: request.headers.authorization, token: query?.token });
    } catch (err) {
      if (!(err instanceof AuthError)) throw err;
      request.log.warn({ code: err.code, url: request.url.split('?')[0], ip: request.ip }, 'request refused');
      await reply.code(err.statusCode).send({ error: err.code, message: err.message });
    }
  };
}

/**
 * A preValidation hook for server-to-server APIs: an API key in `Authorization: Bearer`, never a session token
 * (tokens are handed to browsers and devices, demo tokens included) and never a URL parameter.
 */
export function requireApiKey(auth: Auth) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!auth.required) {
      request.principal = { kind: 'anonymous', keyId: 'anonymous' };
      return;
    }
    const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
    const principal = bearer ? auth.verifyApiKey(bearer) : null;
    if (principal) {
      request.principal = principal;
      return;
    }
    const code = bearer ? 'invalid_credentials' : 'missing_credentials';
    request.log.warn({ code, url: request.url.split('?')[0], ip: request.ip }, 'request refused: an API key is required');
    await reply.code(401).send({ error: code, message: 'an API key is required ("Authorization: Bearer <API key>"); session tokens are for callers' });
  };
}

/**
 * A preValidation hook for `/v1/admin/*`: an admin key (auth.adminKeyHashes) in `Authorization: Bearer`.
 * With auth.required=false every entry point is open, these too.
 */
export function requireAdminKey(auth: Auth) {
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (!auth.required) {
      request.principal = { kind: 'anonymous', keyId: 'anonymous' };
      return;
    }
    const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
    const principal = bearer ? auth.verifyAdminKey(bearer) : null;
    if (principal) {
      request.principal = principal;
      return;
    }
    // A valid API key is known but not allowed here (403); anything else is not a credential (401).
    const known = bearer ? auth.verifyApiKey(bearer) !== null : false;
    request.log.warn({ url: request.url.split('?')[0], ip: request.ip, known }, 'admin request refused: an admin key is required');
    const code = known ? 'forbidden' : bearer ? 'invalid_credentials' : 'missing_credentials';
    await reply.code(known ? 403 : 401).send({ error: code, message: 'an admin key is required ("Authorization: Bearer <admin key>")' });
  };
}

/** `POST /v1/tokens`: a backend holding an API key mints a short-lived session token for a browser or device. */
export const tokenRoutes: FastifyPluginAsync<{ auth: Auth; agents?: { readonly configured: boolean; readonly names: string[]; has(name: string): boolean } }> = async (
  app,
  { auth, agents },
) => {
  app.post(
    '/v1/tokens',
    {
      schema: {
        body: {
          type: 'object',
          additionalProperties: false,
          properties: {
            ttl_s: { type: 'integer', minimum: 1, maximum: MAX_TOKEN_TTL_S },
            // Kept on the records of calls placed with the token, for a person's access and erasure requests.
            customer_id: { type: 'string', minLength: 1, maxLength: 128 },
            // Caller context for the call's tools and webhooks (src/integration/context.ts); bounded: it rides in a URL.
            agent: { type: 'string', pattern: '^[A-Za-z0-9_.-]{1,64}$' },
            language: { type: 'string', pattern: '^[a-z]{2,3}(-[A-Za-z0-9]{1,8})*$', maxLength: 16 },
            vars: {
              type: 'object',
              maxProperties: MAX_CALLER_VARS,
              propertyNames: { pattern: VAR_NAME_PATTERN },
              additionalProperties: { type: 'string', maxLength: MAX_VAR_VALUE },
            },
          },
        },
      },
    },
    async (request, reply) => {
      const bearer = /^Bearer\s+(.+)$/i.exec(request.headers.authorization ?? '')?.[1]?.trim();
      const principal = bearer ? auth.verifyApiKey(bearer) : null;
      if (!principal) {
        request.log.warn({ ip: request.ip }, 'token request without a valid API key');
        return reply.code(401).send({ error: bearer ? 'invalid_credentials' : 'missing_credentials', message: 'an API key is required to mint tokens' });
      }
      const body = (request.body ?? {}) as { ttl_s?: number; customer_id?: string; agent?: string; language?: string; vars?: Record<string, string> };
      const problems = tokenVarProblems(body.vars ?? {});
      if (problems.length > 0) return reply.code(400).send({ error: 'invalid_request', message: problems.join('; ') });
      // With several agents configured the claim chooses one: a name it does not have is refused now, not at call time.
      if (body.agent !== undefined && agents?.configured && !agents.has(body.agent)) {
        return reply.code(400).send({ error: 'unknown_agent', message: `agent: no agent named "${body.agent}" (known: ${agents.names.join(', ')})` });
      }
      const { token, expiresAt } = await auth.mintToken(principal, {
        ttlS: body.ttl_s,
        customerId: body.customer_id,
        agent: body.agent,
        language: body.language,
        vars: body.vars,
      });
      return { token, expires_at: expiresAt, token_type: 'Bearer' };
    },
  );
};
