import { describe, expect, it } from 'vitest';
import { startTestServer } from './helpers/server.js';

/** The VAD's ONNX session is released when the service closes, like the other stages' models. */
describe('service close releases the VAD model', () => {
  it('after stop, the VAD holds no session (a new stream cannot be made)', async () => {
    const server = await startTestServer();
    const vad = server.server.service.providers.vad;
    vad.createStream().close();
    await server.stop();
    expect(() => vad.createStream()).toThrow(/load\(\)/);
  });
});
