/**
 * The call plumbing every transport needs, once: admission (a key id is required), the session's life,
 * caller audio cut into stamped 20 ms frames, agent audio and barge-in into the transport's `AudioSink`, and
 * hanging up (or transferring) only after the agent's last words have played. A transport is left with its
 * wire: parsing what arrives, saying events in its own words, and ending the call its own way.
 *
 *   wire bytes → [transport: parse, decode] → edge.pushPcm → Session → edge → sink.write → [transport: encode, send]
 *
 * `close()` cascades: the session (record, limit slots, agent version) first, then every resource the
 * transport handed to `own()` (codecs, resamplers), each whatever the one before it threw.
 */
import type { Logger } from 'pino';
import { Framer } from '../../audio/framer.js';
import type { Handover } from '../../integration/handover.js';
import type { VoiceService } from '../../service.js';
import type { SessionEvent } from '../../session/events.js';
import type { OutboundFrame } from '../../session/output-pacer.js';
import type { Session } from '../../session/session.js';
import { HANGUP_MAX_WAIT_MS, hangUpAfterPlayout } from '../playout.js';

/** Where the agent's audio goes: the transport's outbound queue, as the session sees it. */
export interface AudioSink {
  /** One 20 ms frame of agent audio (internal format), already paced to real time by the session. */
  write(frame: OutboundFrame): void;
  /** Barge-in: drop agent audio not yet played (queued here, and at the far end where the wire can say so). */
  clear(): void;
  /** Agent audio this transport still holds (bytes or ms; 0 when drained). */
  pending(): number;
  /** What the far end still plays after our queue is empty (its jitter buffer), in ms. */
  readonly tailMs: number;
  /** Frames of reply `responseId` the caller has heard, when the wire reports playout (telephony marks). */
  playedFrames?(responseId: string): number | undefined;
  /**
   * The wire's own proof that everything written has played (a telephony mark echo), bounded by `maxMs`.
   * Without it the edge waits for `pending()` to reach 0 and then `tailMs`.
   */
  waitForPlayout?(maxMs: number): Promise<void>;
}

/** What the edge asks of the transport's wire. */
export interface CallWire {
  /** A session event, to say in the wire's words. `audio.clear` has already reached the sink. */
  event(event: SessionEvent): void;
  /** The agent ended the call and its last words have played (or the wait ran out): end it on the wire. */
  agentEnded(action: 'hangup' | 'transfer', handover: Handover | null): void;
}

/** What the edge needs of the service: a call's admission and its end. */
export type CallAdmission = Pick<VoiceService, 'openSession' | 'closeSession'>;

type OpenOptions = NonNullable<Parameters<VoiceService['openSession']>[2]>;

/** The call's admission: whose key it counts against is not optional. */
export type CallEdgeOptions = Omit<OpenOptions, 'keyId'> & { keyId: string };

export interface Closable {
  close(): void;
}

export class CallEdge {
  private current: Session | null = null;
  private readonly framer = new Framer();
  private readonly owned: Closable[] = [];
  private closing: Promise<void> | null = null;
  private admitting: Promise<void> | null = null;
  private ending = false;
  private logger: Logger;

  constructor(
    private readonly service: CallAdmission,
    /** The transport's name in metrics, records and logs ('ws', 'sip', 'twilio', …). */
    readonly transport: string,
    private readonly wire: CallWire,
    private readonly sink: AudioSink,
    log: Logger,
  ) {
    this.logger = log;
  }

  /** The call's session; null before admission and after close. */
  get session(): Session | null {
    return this.current;
  }

  /** The logger, with the call id once the call is admitted. */
  get log(): Logger {
    return this.logger;
  }

  /** True from the moment close() is called. */
  get closed(): boolean {
    return this.closing !== null;
  }

  /** Frees `resource` when the call ends (or at once if it has already ended). */
  own<T extends Closable>(resource: T): T {
    if (this.closing) resource.close();
    else this.owned.push(resource);
    return resource;
  }

  /**
   * Admit the call and start its session. Throws what admission throws (LimitError, AgentSelectionError,
   * NotReadyError, a provider's failure: `refusalOf` says what each means on the wire). Resolves null when the
   * edge was closed while admission ran: the session it got is closed again and nothing is left open.
   */
  async open(options: CallEdgeOptions): Promise<Session | null> {
    if (this.closing || this.admitting) return null;
    // The session is this edge's from the moment admission returns it, so a close() that came meanwhile (and
    // waits for admission) ends it with everything else.
    this.admitting = this.service
      .openSession(
        this.transport,
        {
          event: (event) => this.onEvent(event),
          audio: (frame) => this.sink.write(frame),
          ...(this.sink.playedFrames ? { playedFrames: (responseId: string) => this.sink.playedFrames?.(responseId) } : {}),
        },
        options,
      )
      .then((session) => {
        this.current = session;
        // A transport that knew the id already (WebRTC's peer) bound it: pino would write the key twice.
        if (this.logger.bindings().callId !== session.callId) this.logger = this.logger.child({ callId: session.callId });
      });
    await this.admitting;
    return this.closing ? null : this.current;
  }

  /** Caller audio at the internal rate, in chunks of any size, that arrived at `arrivalMs`: sent on as 20 ms frames. */
  pushPcm(pcm: Int16Array, arrivalMs: number = performance.now()): number {
    const session = this.current;
    if (!session || this.closing) return 0;
    const frames = this.framer.push(pcm, arrivalMs);
    for (const frame of frames) session.pushAudio(frame);
    return frames.length;
  }

  private onEvent(event: SessionEvent): void {
    if (event.type === 'audio.clear') this.sink.clear();
    this.wire.event(event);
    // One wait at a time; once the wire has acted the latch opens again, since a wire may keep the call (a
    // transfer the far end refused leaves the caller with the agent, who may end the call later).
    if (event.type === 'call.action' && !this.ending) {
      this.ending = true;
      const action = event.action;
      void this.afterPlayout()
        .then(
          () => {
            if (this.closing) return;
            this.wire.agentEnded(action, action === 'transfer' ? (this.current?.handover ?? null) : null);
          },
          (err: unknown) => this.logger.error({ err }, 'waiting for the last words to play failed'),
        )
        .finally(() => {
          this.ending = false;
        });
    }
  }

  /** The agent's audio so far has played at the caller (bounded by HANGUP_MAX_WAIT_MS). */
  private async afterPlayout(): Promise<void> {
    const sink = this.sink;
    if (sink.waitForPlayout) {
      await this.current?.waitForPlayout(HANGUP_MAX_WAIT_MS);
      await sink.waitForPlayout(HANGUP_MAX_WAIT_MS);
      return;
    }
    await hangUpAfterPlayout({ session: this.current, pending: () => sink.pending(), tailMs: sink.tailMs, isClosed: () => this.closing !== null }, () => undefined);
  }

  /** End the call: the session first (its record and slots), then what the transport owns. Idempotent. */
  close(reason = 'hangup'): Promise<void> {
    this.closing ??= this.shutdown(reason);
    return this.closing;
  }

  private async shutdown(reason: string): Promise<void> {
    // A call being admitted is let finish, then ended here: it must not outlive the close that came first.
    await this.admitting?.catch(() => undefined);
    const session = this.current;
    this.current = null;
    try {
      if (session) await this.service.closeSession(session, this.transport, reason);
    } finally {
      for (const resource of this.owned.splice(0)) {
        try {
          resource.close();
        } catch (err) {
          this.logger.warn({ err }, 'a call resource failed to close');
        }
      }
    }
  }
}
