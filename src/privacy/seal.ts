import { createCipheriv, createDecipheriv, createHash, createHmac, randomBytes } from 'node:crypto';

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
    if (!data.subarray(0, FILE_MAGIC.length).equals(Buffer.from(FILE_MAGIC, 'ascii'))) return data;
    const keyId = data.toString('ascii', FILE_MAGIC.length, FILE_MAGIC.length + 8);
    const key = this.keys.find((k) => k.id === keyId);
    if (!key) throw new Error(`file sealed with key ${keyId}, which is not configured`);
    const parts: Buffer[] = [];
    let at = FILE_MAGIC.length + 9;
    for (let index = 0; at < data.length; index++) {
      const length = data.readUInt32LE(at);
      const iv = data.subarray(at + 4, at + 16);
      const tag = data.subarray(at + 16, at + 32);
      const decipher = createDecipheriv('aes-256-gcm', key.bytes, iv);
      decipher.setAAD(Buffer.from(`${context}:${index}`, 'utf8'));
      decipher.setAuthTag(tag);
      parts.push(decipher.update(data.subarray(at + 32, at + 32 + length)), decipher.final());
      at += 32 + length;
    }
    return Buffer.concat(parts);
  }

  /** Every lookup hash `value` may have been stored under (one per key; the first is the one written now). */
  lookups(kind: string, value: string): string[] {
    const text = `${kind}:${normaliseSubject(kind, value)}`;
    if (this.keys.length === 0) return [createHash('sha256').update(text).digest('hex')];
    return this.keys.map((k) => createHmac('sha256', k.bytes).update(text).digest('hex'));
  }
}

/** Caller numbers compare by their digits and a leading '+' ("+44 20 7946-0958" = "+442079460958"). */
export function normaliseSubject(kind: string, value: string): string {
  if (kind !== 'caller') return value.trim();
  const trimmed = value.trim();
  const digits = trimmed.replace(/[^\d]/g, '');
  return digits.length >= 3 ? `${trimmed.startsWith('+') ? '+' : ''}${digits}` : trimmed.toLowerCase();
}
