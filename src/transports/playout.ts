/**
 * Hanging up after the agent's last words, the same way on every transport: the session's pacer says the
 * caller has heard what it sent; then the transport's own queue (socket buffer, RTP or WebRTC outbound queue)
 * must drain, and the far end's playout margin pass. Bounded: a stalled peer is hung up anyway.
 */
export interface PlayoutEdge {
  /** The call's session (null when it is already gone). */
  session: { waitForPlayout(maxMs: number): Promise<void> } | null;
  /** Agent audio this transport still holds (bytes or ms; 0 when drained). */
  pending(): number;
  /** What the far end still plays after our queue is empty (its jitter buffer), in ms. */
  tailMs: number;
  /** The call ended meanwhile: nothing to do. */
  isClosed(): boolean;
}

/** The longest a hang-up waits for playout. */
export const HANGUP_MAX_WAIT_MS = 3000;

const POLL_MS = 20;
const sleep = (ms: number) => new Promise<void>((resolve) => setTimeout(resolve, ms));

export async function hangUpAfterPlayout(edge: PlayoutEdge, hangUp: () => void, maxMs = HANGUP_MAX_WAIT_MS): Promise<void> {
  const deadline = performance.now() + maxMs;
  await edge.session?.waitForPlayout(maxMs);
  while (!edge.isClosed() && edge.pending() > 0 && performance.now() < deadline) await sleep(POLL_MS);
  const tail = Math.min(edge.tailMs, Math.max(0, deadline - performance.now()));
  if (tail > 0 && !edge.isClosed()) await sleep(tail);
  if (!edge.isClosed()) hangUp();
}
