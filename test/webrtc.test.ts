import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chromium, type Browser, type Page } from 'playwright-core';
import { SignJWT } from 'jose';
import { concatPcm } from '../src/audio/framer.js';
import { writeWav } from '../src/audio/wav.js';
import { resampleOnce } from '../src/audio/resample.js';
import { speak } from './helpers/speech.js';
import { startTestServer, TEST_API_KEY, type TestServer } from './helpers/server.js';
import { until } from './helpers/until.js';

/**
 * A real browser call: Debian Chromium (headless) runs the <voice-agent> widget from the demo page, its
 * WebRTC stack sends recorded speech from a fake microphone, and the server's libwebrtc peer feeds the
 * embedded models. Everything stays on 127.0.0.1.
 */
// Browser globals, used only inside page.evaluate() callbacks (they run in Chromium, not in Node).
interface PageElement {
  getAttribute(name: string): string | null;
  setAttribute(name: string, value: string): void;
  addEventListener(type: string, listener: (event: { detail: unknown }) => void): void;
  shadowRoot: { querySelector(selector: string): { textContent: string | null } | null } | null;
}
declare const document: { getElementById(id: string): PageElement | null; createElement(tag: string): PageElement; body: { appendChild(el: PageElement): void } };
declare const window: object;
interface InboundStats {
  energy: number;
  packets: number;
  concealed: number;
  samples: number;
}

const SECRET = 'webrtc-test-secret-webrtc-test-secret';
const RATE = 16_000;
let server: TestServer;
let browser: Browser;
let dir: string;
let wavPath: string;
/** Where in the fake microphone's recording the interruption starts, ms. */
let interruptionAtMs: number;

function silence(ms: number): Int16Array {
  return new Int16Array(Math.round((ms / 1000) * RATE));
}

/** Speech at a microphone's level (peaks near -14 dBFS), not a TTS engine's full scale that the browser's AGC would clip. */
function micLevel(pcm: Int16Array): Int16Array {
  let peak = 1;
  for (const s of pcm) peak = Math.max(peak, Math.abs(s));
  const gain = 6500 / peak;
  return pcm.map((s) => Math.round(s * gain));
}

async function peersGauge(): Promise<number> {
  const text = await (await fetch(`${server.httpUrl}/metrics`)).text();
  return Number(/^voice_agent_webrtc_peers (\d+)/m.exec(text)?.[1] ?? NaN);
}

/** Page and metric probes cost more than a field read: every 100 ms. */
const waitFor = <T>(what: string, probe: () => Promise<T | undefined | null | false>, timeoutMs: number): Promise<T> => until(what, probe, timeoutMs, 100);

beforeAll(async () => {
  const [started, askTime, askCapabilities, interruption] = await Promise.all([
    startTestServer({ auth: { tokenSecret: SECRET }, demo: { enabled: true }, webrtc: { candidateAddresses: ['127.0.0.1'], disconnectGraceMs: 1000 } }),
    speak('What time is it?', { padMs: 0 }),
    speak('What can you do for me?', { padMs: 0 }),
    speak('Stop, stop. I want to speak to a human please.', { padMs: 0 }),
  ]);
  server = started;
  // The fake microphone: question, pause for the answer, a question with a long answer, an interruption
  // while that answer plays, then silence (Chromium loops the file; the test ends before it comes round).
  const parts = [silence(3000), micLevel(askTime), silence(4500), micLevel(askCapabilities), silence(2200)];
  interruptionAtMs = (parts.reduce((n, p) => n + p.length, 0) / RATE) * 1000;
  parts.push(micLevel(interruption), silence(25_000));
  dir = await mkdtemp(path.join(tmpdir(), 'webrtc-test-'));
  wavPath = path.join(dir, 'caller.wav');
  // 48 kHz: Chromium's fake capture device plays other rates at the wrong speed.
  await writeWav(wavPath, await resampleOnce(concatPcm(parts), RATE, 48_000), 48_000);
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-background-networking',
      '--disable-component-update',
      '--no-first-run',
      '--disable-sync',
      '--use-fake-ui-for-media-stream',
      '--use-fake-device-for-media-stream',
      `--use-file-for-fake-audio-capture=${wavPath}`,
      '--autoplay-policy=no-user-gesture-required',
      '--allow-loopback-in-peer-connection',
    ],
  });
});

afterAll(async () => {
  await browser?.close();
  await server?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

interface AgentEvent {
  type: string;
  [key: string]: unknown;
}

async function pageEvents(page: Page): Promise<AgentEvent[]> {
  return page.evaluate(() => (window as unknown as { __events: AgentEvent[] }).__events);
}

describe('browser voice widget over WebRTC', () => {
  it('rejects bad offers and bad tokens with clear errors and no leaked peer', async () => {
    const post = (body: unknown, token = TEST_API_KEY) =>
      fetch(`${server.httpUrl}/v1/webrtc/offer`, { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` }, body: JSON.stringify(body) });
    const bad = await post({ type: 'offer', sdp: 'this is not SDP' });
    expect(bad.status).toBe(400);
    expect(await bad.json()).toMatchObject({ error: 'invalid_sdp' });
    expect((await post({ type: 'answer', sdp: 'v=0' })).status).toBe(400);
    expect((await post({ sdp: '' })).status).toBe(400);

    const now = Math.floor(Date.now() / 1000);
    const expired = await new SignJWT({}).setProtectedHeader({ alg: 'HS256' }).setIssuer('voice-agent').setAudience('voice-agent:session').setSubject('k').setIssuedAt(now - 600).setExpirationTime(now - 300).sign(new TextEncoder().encode(SECRET));
    const refused = await post({ type: 'offer', sdp: 'v=0' }, expired);
    expect(refused.status).toBe(401);
    expect(await refused.json()).toMatchObject({ error: 'expired_token' });
    expect((await fetch(`${server.httpUrl}/v1/webrtc/sessions/00000000-0000-0000-0000-000000000000`, { method: 'DELETE', headers: { authorization: `Bearer ${TEST_API_KEY}` } })).status).toBe(404);
    expect(await peersGauge()).toBe(0);

    // The widget says so in words when the token is refused.
    const page = await browser.newPage();
    await page.goto(`${server.httpUrl}/`);
    const error = await page.evaluate(async (token) => {
      const el = document.createElement('voice-agent');
      el.setAttribute('token', token);
      document.body.appendChild(el);
      const agent = el as PageElement & { connect(): Promise<void> };
      try {
        await agent.connect();
        return null;
      } catch (err) {
        const shown = el.shadowRoot?.querySelector('.error')?.textContent ?? '';
        return { code: (err as { code: string }).code, shown, state: el.getAttribute('state') };
      }
    }, expired);
    expect(error).toMatchObject({ code: 'auth_failed', state: 'error' });
    expect(error?.shown).toMatch(/refused .*sign-in/);
    await page.close();
    await waitFor('peer gauge back to 0', async () => (await peersGauge()) === 0, 5000);
  });

  it('talks with the agent from the demo page: transcripts, agent audio, barge-in, and cleanup when the tab closes', async () => {
    const page = await browser.newPage();
    await page.setViewportSize({ width: 900, height: 640 });
    await page.goto(`${server.httpUrl}/`);
    await page.evaluate(() => {
      const w = window as unknown as { __events: unknown[]; __transcripts: unknown[] };
      w.__events = [];
      w.__transcripts = [];
      const agent = document.getElementById('agent')!;
      agent.addEventListener('agent-event', (e) => w.__events.push(e.detail));
      agent.addEventListener('transcript', (e) => w.__transcripts.push(e.detail));
    });
    // Chromium's noise suppressor eats the plosives of synthetic speech ("what time" → "or turn"), which the
    // embedded PocketSphinx cannot afford; the widget's opt-out for devices with their own echo canceller
    // keeps the words intact. The default (all processing on) is what the token test above runs.
    await page.evaluate(() => document.getElementById('agent')!.setAttribute('audio-processing', 'off'));
    const clickedAt = performance.now();
    await page.locator('voice-agent button.mic').click();
    await waitFor('state listening', () => page.evaluate(() => document.getElementById('agent')!.getAttribute('state') === 'listening'), 10_000);
    expect(await peersGauge()).toBe(1);

    // Turn 1: "What time is it?" → a transcript with the spoken words and a spoken answer. Synthetic speech
    // through Chromium's capture, Opus and a fresh PocketSphinx decoder is not always heard word-perfectly
    // ("or time is it"), so the words are checked as a set; when "time" was heard the time tool must run.
    const done = await waitFor('the first answer', async () => (await pageEvents(page)).find((e) => e.type === 'response.done' && e.status === 'completed'), 25_000);
    const events = await pageEvents(page);
    const final = events.find((e) => e.type === 'transcript.final' && e.turn === done.turn)!;
    const heardWords = String(final.text).toLowerCase().split(/\s+/);
    expect(heardWords.filter((w) => ['what', 'time', 'is', 'it'].includes(w)).length, `heard "${String(final.text)}"`).toBeGreaterThanOrEqual(2);
    expect(events.some((e) => e.type === 'session.started')).toBe(true);
    const heardTime = heardWords.includes('time');
    if (heardTime) {
      expect(events.some((e) => e.type === 'response.tool_call' && e.name === 'get_current_time' && e.turn === done.turn)).toBe(true);
      expect(String(done.text)).toMatch(/\d/);
    }

    // Agent audio reached the browser's receiver and was decoded with real energy.
    const inbound = await page.evaluate(async (): Promise<InboundStats | null> => {
      const agent = document.getElementById('agent') as unknown as { peerConnection: { getStats(): Promise<Map<string, Record<string, unknown>>> } };
      const stats = await agent.peerConnection.getStats();
      let found: InboundStats | null = null;
      stats.forEach((s) => {
        if (s.type === 'inbound-rtp' && s.kind === 'audio') {
          found = { energy: Number(s.totalAudioEnergy), packets: Number(s.packetsReceived), concealed: Number(s.concealedSamples), samples: Number(s.totalSamplesReceived) };
        }
      });
      return found;
    });
    expect(inbound).not.toBeNull();
    expect(inbound!.energy).toBeGreaterThan(0.01);
    expect(inbound!.packets).toBeGreaterThan(50);
    console.log(`browser inbound-rtp: ${JSON.stringify(inbound)}`);

    // The widget shows both sides of the conversation.
    const lines = await page.locator('voice-agent .line').allTextContents();
    expect(lines.some((l) => l.toLowerCase().includes(String(final.text).toLowerCase()))).toBe(true);
    expect(lines.some((l) => l.includes(String(done.text).slice(0, 12)))).toBe(true);

    // Turn 2 starts a long answer; the recording interrupts it while it plays.
    const interrupted = await waitFor('barge-in', async () => (await pageEvents(page)).find((e) => e.type === 'response.interrupted'), 25_000);
    // A mid-call picture of the widget; docs/widget.png is refreshed only on request, so tests leave the tree clean.
    const shot = process.env.UPDATE_DOCS_SCREENSHOT === '1' ? path.resolve('docs', 'widget.png') : path.join(tmpdir(), 'voice-agent-widget.png');
    await page.screenshot({ path: shot, clip: { x: 0, y: 0, width: 900, height: 640 } });
    const afterBargeIn = await pageEvents(page);
    expect(afterBargeIn.some((e) => e.type === 'audio.clear')).toBe(true);
    expect(interrupted.heardText).toBeTypeOf('string');
    const cut = afterBargeIn.find((e) => e.type === 'response.done' && e.responseId === interrupted.responseId);
    expect(cut?.status).toBe('interrupted');
    // The cut reply is marked in the widget (unless it was cut before a word of it was heard).
    if (String(interrupted.heardText)) expect(await page.locator('voice-agent .line.interrupted').count()).toBe(1);
    // The interrupting words become the next turn and are answered.
    const transfer = await waitFor(
      'answer to the interruption',
      async () => (await pageEvents(page)).find((e) => e.type === 'response.done' && e.status === 'completed' && Number(e.turn) > Number(interrupted.turn)),
      25_000,
    );
    expect(String(transfer.text).length).toBeGreaterThan(0);
    const transcripts = await page.evaluate(() => (window as unknown as { __transcripts: { role: string; final: boolean }[] }).__transcripts);
    // Two questions and the interruption; a pause inside the interruption may merge or split its turns.
    expect(transcripts.filter((t) => t.final && t.role === 'caller').length).toBeGreaterThanOrEqual(2);
    expect(transcripts.filter((t) => t.final && t.role === 'agent').length).toBeGreaterThanOrEqual(3);
    console.log(`call took ${((performance.now() - clickedAt) / 1000).toFixed(1)} s; interruption spoken at ${(interruptionAtMs / 1000).toFixed(1)} s of the recording; heard "${String(interrupted.heardText)}"`);

    // The tab is closed mid-call: the widget hangs up on pagehide, so the server frees the peer at once, long before
    // ICE would notice (disconnectGraceMs after its consent checks fail, seconds).
    const closedAt = performance.now();
    await page.close({ runBeforeUnload: true });
    await waitFor('peer released by the hang-up', async () => (await peersGauge()) === 0 && server.server.service.sessions.size === 0, 3000);
    console.log(`tab closed → peer released in ${(performance.now() - closedAt).toFixed(0)} ms`);
  });

  it('frees the peer of a tab that vanishes without hanging up (a crashed renderer)', async () => {
    const page = await browser.newPage();
    await page.goto(`${server.httpUrl}/`);
    await page.locator('voice-agent button.mic').click();
    await waitFor('state listening', () => page.evaluate(() => document.getElementById('agent')!.getAttribute('state') === 'listening'), 10_000);
    expect(await peersGauge()).toBe(1);
    const crashedAt = performance.now();
    const cdp = await page.context().newCDPSession(page);
    // The renderer dies: no pagehide, no DELETE, no goodbye on the data channel. Only ICE can tell.
    void cdp.send('Page.crash').catch(() => {});
    await waitFor('peer gauge back to 0', async () => (await peersGauge()) === 0, 20_000);
    await waitFor('session closed', async () => server.server.service.sessions.size === 0, 5000);
    console.log(`renderer crashed → peer released in ${(performance.now() - crashedAt).toFixed(0)} ms`);
    await page.close().catch(() => {});
  });
});
