/**
 * <voice-agent>: talk to the voice agent from a web page over WebRTC.
 *
 *   <script type="module" src="https://VOICE-HOST/widget/voice-agent.js"></script>
 *   <voice-agent token-url="/api/voice-token"></voice-agent>
 *
 * Attributes: token-url (your backend endpoint answering {"token": "..."}; it calls POST /v1/tokens with
 * your API key — never put an API key in a page), token (a token you already have), server (the voice
 * service's base URL; default: where this script was loaded from), language (BCP-47, default "en"),
 * ice-servers (JSON array of RTCIceServer, for callers behind strict NAT), heading (the card's title),
 * audio-processing ("off" turns off the browser's echo cancellation, noise suppression and gain control: only
 * for devices with their own echo canceller).
 * API: connect(), disconnect(), sendText(text), cancelResponse(), state, transcript, peerConnection,
 * tokenProvider (async () => token). Events: "state", "transcript", "error", "agent-event".
 */

const MODULE_ORIGIN = new URL(import.meta.url).origin;
const ICE_GATHERING_TIMEOUT_MS = 3000;

/** Messages people understand, by error code. */
const MESSAGES = {
  mic_denied: 'Microphone access was denied. Allow the microphone for this site (the icon in the address bar) and try again.',
  mic_missing: 'No microphone was found. Connect one and try again.',
  mic_busy: 'The microphone is in use by another application or could not be started.',
  insecure_context: 'The microphone only works on secure pages (https:// or localhost).',
  unsupported: 'This browser cannot make voice calls (WebRTC is not available).',
  server_unreachable: 'The voice service cannot be reached. Check your connection and try again.',
  auth_failed: 'The voice service refused this page’s sign-in (the token is missing, invalid or expired). Reload the page and try again.',
  busy: 'The voice service is busy right now. Please try again in a moment.',
  negotiation_failed: 'The call could not be set up with the voice service.',
  connection_lost: 'The connection to the voice service was lost.',
};

const STATE_LABELS = {
  idle: 'Ready',
  connecting: 'Connecting…',
  listening: 'Listening',
  'agent-speaking': 'Agent speaking',
  ended: 'Call ended',
  error: 'Error',
};

class VoiceAgentError extends Error {
  constructor(code, detail) {
    super(MESSAGES[code] ?? detail ?? code);
    this.code = code;
    this.detail = detail;
  }
}

const TEMPLATE = `
<style>
  :host { display: block; width: 360px; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: #1d2330; }
  .card { border: 1px solid #d9dee8; border-radius: 14px; background: #fff; box-shadow: 0 4px 18px rgba(20, 30, 60, .08); overflow: hidden; }
  header { display: flex; align-items: center; gap: 10px; padding: 12px 14px; border-bottom: 1px solid #eef1f6; }
  .dot { width: 10px; height: 10px; border-radius: 50%; background: #9aa3b5; flex: none; }
  :host([state="connecting"]) .dot { background: #e0a800; }
  :host([state="listening"]) .dot, :host([state="agent-speaking"]) .dot { background: #22a559; }
  :host([state="error"]) .dot { background: #d23c3c; }
  .title { font-weight: 600; flex: 1; }
  .state { color: #5b6478; font-size: 13px; }
  .controls { display: flex; align-items: center; gap: 14px; padding: 14px; }
  button.mic { width: 56px; height: 56px; border-radius: 50%; border: none; cursor: pointer; background: #2f6fed; color: #fff; flex: none; display: grid; place-items: center; }
  button.mic:hover { background: #245ad0; }
  button.mic[aria-pressed="true"] { background: #d23c3c; }
  button.mic:disabled { background: #9aa3b5; cursor: default; }
  button.mic svg { width: 26px; height: 26px; fill: currentColor; }
  .meters { flex: 1; display: grid; gap: 8px; }
  .meter { display: flex; align-items: center; gap: 8px; font-size: 12px; color: #5b6478; }
  .meter span { width: 44px; }
  .bars { display: flex; gap: 3px; align-items: end; height: 16px; }
  .bars i { width: 4px; height: 4px; border-radius: 2px; background: #cdd3df; transition: height .15s; }
  .meter.active .bars i { background: #22a559; animation: pulse .8s ease-in-out infinite; }
  .meter.agent.active .bars i { background: #2f6fed; }
  .bars i:nth-child(2) { animation-delay: .1s !important; } .bars i:nth-child(3) { animation-delay: .2s !important; }
  .bars i:nth-child(4) { animation-delay: .3s !important; } .bars i:nth-child(5) { animation-delay: .4s !important; }
  @keyframes pulse { 0%, 100% { height: 4px; } 50% { height: 16px; } }
  .error { display: none; margin: 0 14px 12px; padding: 8px 10px; border-radius: 8px; background: #fdecec; color: #a42424; font-size: 13px; }
  .error.shown { display: block; }
  .transcript { max-height: 260px; min-height: 60px; overflow-y: auto; padding: 10px 14px 14px; border-top: 1px solid #eef1f6; display: flex; flex-direction: column; gap: 6px; }
  .empty { color: #9aa3b5; font-size: 13px; }
  .line { max-width: 85%; padding: 6px 10px; border-radius: 12px; white-space: pre-wrap; word-wrap: break-word; }
  .line.caller { align-self: flex-end; background: #2f6fed; color: #fff; border-bottom-right-radius: 4px; }
  .line.agent { align-self: flex-start; background: #f0f2f7; border-bottom-left-radius: 4px; }
  .line.partial { opacity: .7; }
  .line.interrupted::after { content: " — interrupted"; font-style: italic; opacity: .7; }
</style>
<div class="card" part="card">
  <header><div class="dot"></div><div class="title" part="title">Voice assistant</div><div class="state" role="status" aria-live="polite"></div></header>
  <div class="controls">
    <button class="mic" type="button" aria-pressed="false" aria-label="Start talking" part="button">
      <svg viewBox="0 0 24 24" aria-hidden="true"><path d="M12 14a3 3 0 0 0 3-3V5a3 3 0 0 0-6 0v6a3 3 0 0 0 3 3zm5-3a5 5 0 0 1-10 0H5a7 7 0 0 0 6 6.93V21h2v-3.07A7 7 0 0 0 19 11h-2z"/></svg>
    </button>
    <div class="meters">
      <div class="meter caller"><span>You</span><div class="bars"><i></i><i></i><i></i><i></i><i></i></div></div>
      <div class="meter agent"><span>Agent</span><div class="bars"><i></i><i></i><i></i><i></i><i></i></div></div>
    </div>
  </div>
  <div class="error" role="alert"></div>
  <div class="transcript" part="transcript" aria-live="polite"><div class="empty">Press the microphone and start speaking.</div></div>
</div>`;

export class VoiceAgentElement extends HTMLElement {
  static get observedAttributes() {
    return ['heading'];
  }

  constructor() {
    super();
    this.attachShadow({ mode: 'open' }).innerHTML = TEMPLATE;
    const root = this.shadowRoot;
    this.ui = {
      state: root.querySelector('.state'),
      button: root.querySelector('button.mic'),
      callerMeter: root.querySelector('.meter.caller'),
      agentMeter: root.querySelector('.meter.agent'),
      error: root.querySelector('.error'),
      transcript: root.querySelector('.transcript'),
      title: root.querySelector('.title'),
    };
    this.ui.button.addEventListener('click', () => (this.active ? this.disconnect() : this.connect().catch(() => {})));
    /** Optional: an async function returning a session token (overrides the token / token-url attributes). */
    this.tokenProvider = null;
    this._state = 'idle';
    this._pc = null;
    this._channel = null;
    this._mic = null;
    this._audio = null;
    this._sessionId = null;
    this._token = null;
    this._lines = new Map();
    this._transcript = [];
    this._callerSpeaking = false;
    this._agentSpeaking = false;
    this._attempt = 0;
    // A page closed or navigated away mid-call hangs up at once (the DELETE is sent with keepalive), rather than
    // leaving the server to notice the peer is gone when ICE gives up seconds later.
    this._onPageHide = () => {
      if (this.active) this.disconnect();
    };
  }

  connectedCallback() {
    window.addEventListener('pagehide', this._onPageHide);
    this._setState(this._state);
    if (this.hasAttribute('heading')) this.ui.title.textContent = this.getAttribute('heading');
  }

  attributeChangedCallback(name, _old, value) {
    if (name === 'heading' && value) this.ui.title.textContent = value;
  }

  disconnectedCallback() {
    window.removeEventListener('pagehide', this._onPageHide);
    this.disconnect();
  }

  /** "idle" | "connecting" | "listening" | "agent-speaking" | "ended" | "error" */
  get state() {
    return this._state;
  }

  get active() {
    return this._state === 'connecting' || this._state === 'listening' || this._state === 'agent-speaking';
  }

  /** Finished lines of the call: [{role: "caller" | "agent", text, turn, status?}]. */
  get transcript() {
    return this._transcript.slice();
  }

  /** The RTCPeerConnection of the current call (for getStats), or null. */
  get peerConnection() {
    return this._pc;
  }

  get sessionId() {
    return this._sessionId;
  }

  get serverUrl() {
    return (this.getAttribute('server') || MODULE_ORIGIN).replace(/\/+$/, '');
  }

  /** Start a call: microphone, token, offer/answer. Rejects with an error whose `code` names the cause. */
  async connect() {
    if (this.active) return;
    const attempt = ++this._attempt;
    this._clearError();
    this._setState('connecting');
    try {
      if (typeof RTCPeerConnection !== 'function') throw new VoiceAgentError('unsupported');
      if (!navigator.mediaDevices?.getUserMedia) throw new VoiceAgentError(window.isSecureContext ? 'unsupported' : 'insecure_context');
      const [mic, token] = await Promise.all([this._openMic(), this._getToken()]);
      if (attempt !== this._attempt) {
        mic.getTracks().forEach((t) => t.stop());
        return;
      }
      this._mic = mic;
      this._token = token;
      await this._negotiate(attempt);
    } catch (err) {
      if (attempt !== this._attempt) return;
      const error = err instanceof VoiceAgentError ? err : new VoiceAgentError('negotiation_failed', String(err?.message ?? err));
      this._teardown();
      this._fail(error);
      throw error;
    }
  }

  /** Hang up (also tells the server, so the call ends at once). */
  disconnect() {
    const wasActive = this.active;
    this._attempt++;
    const id = this._sessionId;
    if (id && this._token) {
      // keepalive: the request survives the page being closed right after.
      fetch(`${this.serverUrl}/v1/webrtc/sessions/${id}`, { method: 'DELETE', headers: { authorization: `Bearer ${this._token}` }, keepalive: true }).catch(() => {});
    }
    this._teardown();
    if (wasActive) this._setState('ended');
  }

  /** Send a typed caller turn. */
  sendText(text) {
    this._send({ type: 'input.text', text });
  }

  /** Stop the agent's current reply (as if the caller interrupted). */
  cancelResponse() {
    this._send({ type: 'response.cancel' });
  }

  /** Send a keypad digit (0-9 * # A-D). */
  sendDtmf(digit) {
    this._send({ type: 'input.dtmf', digit });
  }

  async _openMic() {
    try {
      // audio-processing="off" only for devices that cancel echo themselves (kiosks, conference hardware).
      const on = this.getAttribute('audio-processing') !== 'off';
      return await navigator.mediaDevices.getUserMedia({ audio: { echoCancellation: on, noiseSuppression: on, autoGainControl: on }, video: false });
    } catch (err) {
      const name = err?.name;
      if (name === 'NotAllowedError' || name === 'SecurityError') throw new VoiceAgentError('mic_denied', err.message);
      if (name === 'NotFoundError' || name === 'OverconstrainedError') throw new VoiceAgentError('mic_missing', err.message);
      throw new VoiceAgentError('mic_busy', err?.message);
    }
  }

  async _getToken() {
    if (typeof this.tokenProvider === 'function') return await this.tokenProvider();
    if (this.getAttribute('token')) return this.getAttribute('token');
    const tokenUrl = this.getAttribute('token-url');
    if (!tokenUrl) throw new VoiceAgentError('auth_failed', 'set the token-url or token attribute, or the tokenProvider property');
    let response;
    try {
      response = await fetch(new URL(tokenUrl, document.baseURI), { credentials: 'same-origin', headers: { accept: 'application/json' } });
    } catch (err) {
      throw new VoiceAgentError('server_unreachable', err?.message);
    }
    if (response.status === 401 || response.status === 403 || response.status === 404) throw new VoiceAgentError('auth_failed', `token endpoint answered ${response.status}`);
    if (!response.ok) throw new VoiceAgentError('server_unreachable', `token endpoint answered ${response.status}`);
    const body = await response.json().catch(() => null);
    if (!body || typeof body.token !== 'string') throw new VoiceAgentError('auth_failed', 'token endpoint did not return {"token": "..."}');
    return body.token;
  }

  async _negotiate(attempt) {
    let iceServers = [];
    try {
      iceServers = JSON.parse(this.getAttribute('ice-servers') || '[]');
    } catch {
      console.warn('<voice-agent>: ignoring ice-servers attribute that is not JSON');
    }
    const pc = new RTCPeerConnection({ iceServers });
    this._pc = pc;
    for (const track of this._mic.getAudioTracks()) pc.addTrack(track, this._mic);
    const channel = pc.createDataChannel('events');
    this._channel = channel;
    channel.onmessage = (e) => this._onAgentEvent(e.data);
    channel.onclose = () => {
      if (this._channel === channel && this.active) {
        this._teardown();
        this._setState('ended');
      }
    };
    pc.ontrack = (e) => {
      const audio = this._audio ?? new Audio();
      audio.autoplay = true;
      audio.srcObject = e.streams[0] ?? new MediaStream([e.track]);
      this._audio = audio;
      audio.play().catch(() => {});
    };
    pc.onconnectionstatechange = () => {
      if (this._pc !== pc) return;
      if (pc.connectionState === 'connected' && this._state === 'connecting') this._setState('listening');
      if (pc.connectionState === 'failed') {
        this._teardown();
        this._fail(new VoiceAgentError('connection_lost'));
      }
    };
    await pc.setLocalDescription(await pc.createOffer());
    await new Promise((resolve) => {
      if (pc.iceGatheringState === 'complete') return resolve();
      const timer = setTimeout(resolve, ICE_GATHERING_TIMEOUT_MS);
      pc.addEventListener('icegatheringstatechange', () => {
        if (pc.iceGatheringState === 'complete') {
          clearTimeout(timer);
          resolve();
        }
      });
    });
    if (attempt !== this._attempt) return;
    let response;
    try {
      response = await fetch(`${this.serverUrl}/v1/webrtc/offer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${this._token}` },
        body: JSON.stringify({ type: 'offer', sdp: pc.localDescription.sdp, language: this.getAttribute('language') || undefined }),
      });
    } catch (err) {
      throw new VoiceAgentError('server_unreachable', err?.message);
    }
    const body = await response.json().catch(() => ({}));
    if (response.status === 401 || response.status === 403) throw new VoiceAgentError('auth_failed', body.message);
    if (response.status === 503) throw new VoiceAgentError('busy', body.message);
    if (!response.ok) throw new VoiceAgentError('negotiation_failed', body.message ?? `HTTP ${response.status}`);
    if (attempt !== this._attempt) return;
    this._sessionId = body.sessionId;
    await pc.setRemoteDescription({ type: 'answer', sdp: body.sdp });
  }

  _onAgentEvent(data) {
    let event;
    try {
      event = JSON.parse(data);
    } catch {
      return;
    }
    this.dispatchEvent(new CustomEvent('agent-event', { detail: event }));
    switch (event.type) {
      case 'speech.started':
        this._setSpeaking('caller', true);
        break;
      case 'speech.stopped':
        this._setSpeaking('caller', false);
        break;
      case 'transcript.partial':
        this._line(`caller:${event.turn}`, 'caller', event.text, false, event.turn);
        break;
      case 'transcript.final':
        this._setSpeaking('caller', false);
        this._line(`caller:${event.turn}`, 'caller', event.text, true, event.turn);
        break;
      case 'response.text.delta': {
        const key = `agent:${event.responseId}`;
        const previous = this._lines.get(key)?.text ?? '';
        this._line(key, 'agent', previous + event.text, false, event.turn);
        break;
      }
      case 'response.audio.started':
        this._setSpeaking('agent', true);
        break;
      case 'audio.clear':
        this._setSpeaking('agent', false);
        break;
      case 'response.done': {
        this._setSpeaking('agent', false);
        const key = `agent:${event.responseId}`;
        const shown = this._lines.get(key)?.text ?? '';
        const text = event.status === 'interrupted' ? event.text : event.text || shown;
        this._line(key, 'agent', text, true, event.turn, event.status);
        break;
      }
      case 'call.action':
        if (event.action === 'hangup') setTimeout(() => this.disconnect(), 300);
        break;
      case 'error':
        this.dispatchEvent(new CustomEvent('error', { detail: { code: event.code, message: event.message, fromServer: true } }));
        break;
      default:
        break;
    }
  }

  /** Show (or update) one transcript line; a final line is also recorded and announced. */
  _line(key, role, text, final, turn, status) {
    let entry = this._lines.get(key);
    if (!entry) {
      if (!text && final) return;
      const el = document.createElement('div');
      el.className = `line ${role}`;
      this.ui.transcript.querySelector('.empty')?.remove();
      this.ui.transcript.appendChild(el);
      entry = { el, text: '' };
      this._lines.set(key, entry);
    }
    entry.text = text;
    if (final && !text) {
      entry.el.remove();
      this._lines.delete(key);
      return;
    }
    entry.el.textContent = text;
    entry.el.classList.toggle('partial', !final);
    entry.el.classList.toggle('interrupted', status === 'interrupted');
    this.ui.transcript.scrollTop = this.ui.transcript.scrollHeight;
    if (final) this._transcript.push({ role, text, turn, ...(status ? { status } : {}) });
    this.dispatchEvent(new CustomEvent('transcript', { detail: { role, text, final, turn, ...(status ? { status } : {}) } }));
  }

  _setSpeaking(who, on) {
    if (who === 'caller') this._callerSpeaking = on;
    else this._agentSpeaking = on;
    this.ui.callerMeter.classList.toggle('active', this._callerSpeaking);
    this.ui.agentMeter.classList.toggle('active', this._agentSpeaking);
    if (this._state === 'listening' || this._state === 'agent-speaking') this._setState(this._agentSpeaking ? 'agent-speaking' : 'listening');
  }

  _setState(state) {
    const changed = state !== this._state;
    this._state = state;
    this.setAttribute('state', state);
    this.ui.state.textContent = STATE_LABELS[state] ?? state;
    const live = this.active;
    this.ui.button.setAttribute('aria-pressed', String(live));
    this.ui.button.setAttribute('aria-label', live ? 'Hang up' : 'Start talking');
    if (changed) this.dispatchEvent(new CustomEvent('state', { detail: { state } }));
  }

  _fail(error) {
    this.ui.error.textContent = error.message;
    this.ui.error.classList.add('shown');
    this._setState('error');
    this.dispatchEvent(new CustomEvent('error', { detail: { code: error.code, message: error.message, detail: error.detail } }));
  }

  _clearError() {
    this.ui.error.textContent = '';
    this.ui.error.classList.remove('shown');
  }

  _send(message) {
    if (this._channel?.readyState !== 'open') throw new Error('<voice-agent> is not connected');
    this._channel.send(JSON.stringify(message));
  }

  _teardown() {
    const channel = this._channel;
    this._channel = null;
    try {
      channel?.close();
    } catch {}
    this._pc?.close();
    this._pc = null;
    this._mic?.getTracks().forEach((t) => t.stop());
    this._mic = null;
    if (this._audio) this._audio.srcObject = null;
    this._sessionId = null;
    this._callerSpeaking = false;
    this._agentSpeaking = false;
    this.ui.callerMeter.classList.remove('active');
    this.ui.agentMeter.classList.remove('active');
  }
}

if (!customElements.get('voice-agent')) customElements.define('voice-agent', VoiceAgentElement);
