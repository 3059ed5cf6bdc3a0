import { createHmac, timingSafeEqual } from 'node:crypto';

/**
 * Twilio request signatures (`X-Twilio-Signature`), per Twilio's documented algorithm: take the full URL
 * Twilio requested (scheme, host, path and query string), append each POST parameter's name and value
 * sorted by name (none for a WebSocket upgrade, which is a GET), HMAC-SHA1 it with the account's auth
 * token, base64 the digest.
 */
export function computeTwilioSignature(authToken: string, url: string, params: Record<string, string> = {}): string {
  let data = url;
  for (const key of Object.keys(params).sort()) data += key + params[key];
  return createHmac('sha1', authToken).update(data, 'utf8').digest('base64');
}

/**
 * Twilio's own validators accept the URL with and without the scheme's default port, since proxies add or
 * strip it; so do we.
 */
function urlVariants(url: string): string[] {
  const variants = new Set([url]);
  const m = /^([a-z][a-z0-9+.-]*:\/\/)([^/?#]*)(.*)$/is.exec(url);
  if (m) {
    const [, scheme, authority, rest] = m;
    const defaultPort = /^(https|wss):/i.test(scheme) ? '443' : '80';
    if (authority.endsWith(`:${defaultPort}`)) variants.add(scheme + authority.slice(0, -(defaultPort.length + 1)) + rest);
    else if (!/:\d+$/.test(authority)) variants.add(`${scheme}${authority}:${defaultPort}${rest}`);
  }
  return [...variants];
}

/** Constant-time check of a presented signature against the URLs the request may have been signed for. */
export function verifyTwilioSignature(authToken: string, signature: string | undefined, urls: readonly string[], params: Record<string, string> = {}): boolean {
  if (!signature) return false;
  const presented = Buffer.from(signature, 'utf8');
  let ok = false;
  for (const url of urls) {
    for (const variant of urlVariants(url)) {
      const expected = Buffer.from(computeTwilioSignature(authToken, variant, params), 'utf8');
      if (expected.length === presented.length && timingSafeEqual(expected, presented)) ok = true;
    }
  }
  return ok;
}
