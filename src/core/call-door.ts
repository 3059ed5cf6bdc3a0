/**
 * Route config of the requests that start a call (the WebSocket doors, the WebRTC offer): a node that is loading
 * or draining refuses them with 503 before the upgrade or the offer (src/server.ts), so a proxy in front can
 * retry elsewhere. Each transport marks its own door; the server never lists paths.
 */
declare module 'fastify' {
  interface FastifyContextConfig {
    callDoor?: boolean;
  }
}

export const CALL_DOOR = { callDoor: true } as const;
