/**
 * What happens to a phone call after its media stream: Twilio requests `<Connect action="…">` when the stream
 * ends, and this service answers from what the agent decided (docs/telephony.md#handing-over): `<Dial>` the
 * queue's target with the call's context when it transferred, `<Hangup/>` when it ended the call.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AuthError } from '../../auth/auth.js';
import { twimlFor, type Handover } from '../../integration/handover.js';
import type { VoiceService } from '../../service.js';
import { verifyTwilioSignature } from './twilio-signature.js';

/** How long a decision waits for the provider's request, and how many calls' decisions are kept at most. */
const OUTCOME_TTL_MS = 10 * 60_000;
const MAX_OUTCOMES = 10_000;

/** The agent's last decision per provider call id (CallSid): a transfer with its context, or a hang-up. */
export class CallOutcomes {
  private readonly outcomes = new Map<string, { handover: Handover | null; expiresAt: number }>();

  record(providerCallId: string, handover: Handover | null): void {
    const now = Date.now();
    for (const [id, o] of this.outcomes) {
      if (o.expiresAt > now && this.outcomes.size < MAX_OUTCOMES) break;
      this.outcomes.delete(id); // oldest first: insertion order
    }
    this.outcomes.delete(providerCallId);
    this.outcomes.set(providerCallId, { handover, expiresAt: now + OUTCOME_TTL_MS });
  }

  /** The decision for this call, once (a second request for it hangs up). */
  take(providerCallId: string): Handover | null {
    const o = this.outcomes.get(providerCallId);
    this.outcomes.delete(providerCallId);
    return o && o.expiresAt > Date.now() ? o.handover : null;
  }
}

/** `POST /v1/telephony/twilio/connect-action`: Twilio-signed (or API key), form-encoded, answered with TwiML. */
export function connectActionRoutes(app: FastifyInstance, service: VoiceService, outcomes: CallOutcomes, publicUrls: (request: FastifyRequest) => string[]): void {
  app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_req, body, done) => {
    done(null, Object.fromEntries(new URLSearchParams(String(body))));
  });
  app.post('/v1/telephony/twilio/connect-action', async (request: FastifyRequest, reply: FastifyReply) => {
    const params = isStringRecord(request.body) ? request.body : {};
    if (!(await admitted(service, request, reply, params, publicUrls))) return;
    const callSid = params.CallSid ?? '';
    const handover = /^[A-Za-z0-9]{1,64}$/.test(callSid) ? outcomes.take(callSid) : null;
    request.log.info({ providerCallId: callSid, queue: handover?.queue ?? null, dial: Boolean(handover?.target) }, 'twilio connect action answered');
    return reply.type('text/xml; charset=utf-8').send(twimlFor(handover));
  });
}

/** Twilio's signature over the URL and the POST parameters when an auth token is set; otherwise an API key. */
async function admitted(service: VoiceService, request: FastifyRequest, reply: FastifyReply, params: Record<string, string>, publicUrls: (request: FastifyRequest) => string[]): Promise<boolean> {
  const authToken = service.config.telephony.twilio.authToken;
  if (authToken) {
    const header = request.headers['x-twilio-signature'];
    const signature = Array.isArray(header) ? header[0] : header;
    if (verifyTwilioSignature(authToken, signature, publicUrls(request), params)) return true;
    request.log.warn({ ip: request.ip, signed: Boolean(signature) }, 'twilio connect action refused: bad signature');
    await reply.code(403).send({ error: 'invalid_signature', message: 'X-Twilio-Signature does not match this URL, its parameters and the configured auth token' });
    return false;
  }
  try {
    const query = request.query as Record<string, string | undefined> | undefined;
    await service.auth.authenticate({ authorization: request.headers.authorization, token: query?.token });
    return true;
  } catch (err) {
    if (!(err instanceof AuthError)) throw err;
    await reply.code(err.statusCode).send({ error: err.code, message: err.message });
    return false;
  }
}

function isStringRecord(v: unknown): v is Record<string, string> {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && Object.values(v).every((x) => typeof x === 'string');
}
