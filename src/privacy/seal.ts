import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';

/**
 * Encryption at rest of what the call record keeps about people (transcript lines, caller numbers, customer
 * ids): AES-256-GCM from Node's crypto (OpenSSL), a fresh 96-bit IV per value, the call id as additional data
 * so a value cannot be moved to another call's record unnoticed.
 *
 * Keys come from configuration (`store.encryptionKeys`, or VOICE_AGENT_STORE_KEYS, comma-separated), 32 random
 * bytes in base64 each. The first key encrypts new values; every listed key decrypts, so a key is rotated by
 * putting the new one first and keeping the old one listed until the rows it sealed are gone (retention or
 * erasure): rows are not re-encrypted. A value sealed with a key no longer listed reads as "[unreadable]".
 *
 * Lookups (a person's calls by caller number or customer id) use a keyed hash (HMAC-SHA-256 under each key),
 * so the file alone never says whose calls it holds; without keys it is a plain SHA-256.
 */
const PREFIX = 'enc1:';
const FILE_MAGIC = 'VAENC1:';
export const UNREADABLE = '[unreadable]';

interface Key {
  id: string;
  bytes: Buffer;
}

export class Sealer {
  private readonly keys: Key[];

  constructor(keysBase64: readonly string[]) {
    this.keys = keysBase64.map((k) => {
      const bytes = Buffer.from(k, 'base64');
      if (bytes.length !== 32) throw new Error('store encryption keys must be 32 bytes, base64 (openssl rand -base64 32)');
      return { id: createHash('sha256').update(bytes).digest('hex').slice(0, 8), bytes };
    });
  }

  get enabled(): boolean {
    return this.keys.length > 0;
  }

  /** Id of the key new values are sealed with (for docs and logs: never the key). */
  get currentKeyId(): string | null {
    return this.keys[0]?.id ?? null;
  }

  seal(value: string, context: string): string {
    const key = this.keys[0];
    if (!key) return value;
    const iv = randomBytes(12);
    const cipher = createCipheriv('aes-256-gcm', key.bytes, iv);
    cipher.setAAD(Buffer.from(context, 'utf8'));
    const body = Buffer.concat([cipher.update(value, 'utf8'), cipher.final()]);
    return `${PREFIX}${key.id}:${Buffer.concat([iv, cipher.getAuthTag(), body]).toString('base64')}`;
  }

  /** Plain values (written before encryption was turned on) are returned as they are. */
  open(stored: string, context: string): string {
    if (!stored.startsWith(PREFIX)) return stored;
    const [keyId, data] = stored.slice(PREFIX.length).split(':', 2);
    const key = this.keys.find((k) => k.id === keyId);
    if (!key || !data) return UNREADABLE;
    try {
      const raw = Buffer.from(data, 'base64');
      const decipher = createDecipheriv('aes-256-gcm', key.bytes, raw.subarray(0, 12));
      decipher.setAAD(Buffer.from(context, 'utf8'));
      decipher.setAuthTag(raw.subarray(12, 28));
      return Buffer.concat([decipher.update(raw.subarray(28)), decipher.final()]).toString('utf8');
    } catch {
      return UNREADABLE;
    }
  }

  /**
   * Sealed files (recordings): a header naming the key, then records `[u32 length][iv][tag][ciphertext]`, each
   * bound to `context` and its index, so records cannot be dropped from the middle, reordered or moved unnoticed.
   * `chunk(i, data)` seals the i-th record; `header()` starts the file.
   */
  fileSealer(context: string): { header(): Buffer; chunk(index: number, data: Buffer): Buffer } | null {
    const key = this.keys[0];
    if (!key) return null;
    return {
      header: () => Buffer.from(`${FILE_MAGIC}${key.id}\n`, 'ascii'),
      chunk: (index, data) => {
        const iv = randomBytes(12);
        const cipher = createCipheriv('aes-256-gcm', key.bytes, iv);
        cipher.setAAD(Buffer.from(`${context}:${index}`, 'utf8'));
        const body = Buffer.concat([cipher.update(data), cipher.final()]);
        const length = Buffer.alloc(4);
        length.writeUInt32LE(body.length);
        return Buffer.concat([length, iv, cipher.getAuthTag(), body]);
      },
    };
  }

  /** The plain bytes of a file written by fileSealer (or the file itself when it was not sealed); throws when tampered. */
  openFile(data: Buffer, context: string): Buffer {
    const opener = this.fileOpener(context);
    return Buffer.concat([...opener.push(data), ...opener.end()]);
  }

  /**
   * Opens a file written by fileSealer piece by piece, as it is read (from disk, or chunk by chunk from the
   * database): each record's plain bytes come out once the record is whole and its tag checked, so a recording is
   * served without holding it in memory. A file without the header passes through as it is. `push` and `end`
   * throw when a record is tampered with, the key is not configured, or the file ends inside a record.
   */
  fileOpener(context: string): FileOpener {
    const magic = Buffer.from(FILE_MAGIC, 'ascii');
    const headerLength = magic.length + 9;
    let pending: Buffer = Buffer.alloc(0);
    let mode: 'start' | 'plain' | 'sealed' = 'start';
    let key: Key | undefined;
    let index = 0;
    const records = (): Buffer[] => {
      const out: Buffer[] = [];
      let at = 0;
      while (pending.length - at >= 32 && pending.length - at >= 32 + pending.readUInt32LE(at)) {
        const length = pending.readUInt32LE(at);
        const decipher = createDecipheriv('aes-256-gcm', key!.bytes, pending.subarray(at + 4, at + 16));
        decipher.setAAD(Buffer.from(`${context}:${index++}`, 'utf8'));
        decipher.setAuthTag(pending.subarray(at + 16, at + 32));
        out.push(decipher.update(pending.subarray(at + 32, at + 32 + length)), decipher.final());
        at += 32 + length;
      }
      pending = pending.subarray(at);
      return out;
    };
    return {
      push: (data) => {
        if (mode === 'plain') return [data];
        pending = pending.length === 0 ? data : Buffer.concat([pending, data]);
        if (mode === 'start') {
          const seen = Math.min(pending.length, magic.length);
          if (!pending.subarray(0, seen).equals(magic.subarray(0, seen))) {
            mode = 'plain';
            const all = pending;
            pending = Buffer.alloc(0);
            return [all];
          }
          if (pending.length < headerLength) return [];
          const keyId = pending.toString('ascii', magic.length, magic.length + 8);
          key = this.keys.find((k) => k.id === keyId);
          if (!key) throw new Error(`file sealed with key ${keyId}, which is not configured`);
          mode = 'sealed';
          pending = pending.subarray(headerLength);
        }
        return records();
      },
      end: () => {
        // A file shorter than the header that matched it so far is plain (and tiny).
        if (mode === 'start') return pending.length > 0 ? [pending] : [];
        if (mode === 'sealed' && pending.length > 0) throw new Error('sealed file ends inside a record');
        return [];
      },
    };
  }

  /** Every lookup hash `value` may have been stored under (one per key; the first is the one written now). */
  lookups(kind: string, value: string): string[] {
    const text = `${kind}:${normaliseSubject(kind, value)}`;
    if (this.keys.length === 0) return [createHash('sha256').update(text).digest('hex')];
    return this.keys.map((k) => createHmac('sha256', k.bytes).update(text).digest('hex'));
  }
}

/** See Sealer.fileOpener. */
export interface FileOpener {
  push(data: Buffer): Buffer[];
  end(): Buffer[];
}

/**
 * The plain bytes of `source` (a sealed or plain file, in pieces) as a stream. The first piece is read and opened
 * before this resolves, so a missing file or a key that is not configured is known before anything is sent.
 */
export async function openedStream(opener: FileOpener, source: AsyncIterable<Buffer>): Promise<Readable> {
  const pieces = source[Symbol.asyncIterator]();
  // A reader that stops early (the client went away, a tampered record) closes the source: no file left open.
  const stop = async (): Promise<void> => void (await pieces.return?.());
  let head: Buffer[];
  let done: boolean;
  try {
    const first = await pieces.next();
    done = first.done === true;
    head = done ? opener.end() : opener.push(first.value);
  } catch (err) {
    await stop().catch(() => undefined);
    throw err;
  }
  async function* plain(): AsyncGenerator<Buffer> {
    try {
      yield* head;
      if (done) return;
      for (let next = await pieces.next(); !next.done; next = await pieces.next()) yield* opener.push(next.value);
      yield* opener.end();
    } finally {
      await stop();
    }
  }
  async function* nonEmpty(): AsyncGenerator<Buffer> {
    for await (const piece of plain()) if (piece.length > 0) yield piece;
  }
  return Readable.from(nonEmpty(), { objectMode: false });
}

/** Caller numbers compare by their digits and a leading '+' ("+44 20 7946-0958" = "+442079460958"). */
export function normaliseSubject(kind: string, value: string): string {
  if (kind !== 'caller') return value.trim();
  const trimmed = value.trim();
  const digits = trimmed.replace(/[^\d]/g, '');
  return digits.length >= 3 ? `${trimmed.startsWith('+') ? '+' : ''}${digits}` : trimmed.toLowerCase();
}
