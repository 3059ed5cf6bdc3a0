/**
 * A minimal Ogg page writer for Ogg Opus files (RFC 3533 pages, RFC 7845 Opus mapping): no well-kept npm
 * package writes Ogg Opus from ready-made Opus packets without bringing its own encoder or a native build, and
 * the format needs little: pages of up to 255 lacing segments, a CRC-32 (polynomial 0x04C11DB7, no reflection),
 * an OpusHead page, an OpusTags page, then audio pages whose granule position counts 48 kHz samples.
 */
const CRC_TABLE = (() => {
  const table = new Uint32Array(256);
  for (let i = 0; i < 256; i++) {
    let r = i << 24;
    for (let j = 0; j < 8; j++) r = r & 0x80000000 ? (r << 1) ^ 0x04c11db7 : r << 1;
    table[i] = r >>> 0;
  }
  return table;
})();

export function oggCrc(data: Uint8Array): number {
  let crc = 0;
  for (const byte of data) crc = ((crc << 8) ^ CRC_TABLE[((crc >>> 24) ^ byte) & 0xff]) >>> 0;
  return crc >>> 0;
}

const HEADER_TYPE_BOS = 0x02;
const HEADER_TYPE_EOS = 0x04;

export class OggOpusWriter {
  private sequence = 0;
  private granule = 0n;
  private pending: Uint8Array[] = [];

  /** `write` receives whole pages, in order. */
  constructor(
    private readonly write: (page: Buffer) => void,
    options: { channels: number; inputSampleRate: number; preSkip?: number; vendor?: string },
    private readonly serial = Math.floor(Math.random() * 0xffffffff) >>> 0,
  ) {
    const head = Buffer.alloc(19);
    head.write('OpusHead', 0, 'ascii');
    head[8] = 1; // version
    head[9] = options.channels;
    head.writeUInt16LE(options.preSkip ?? 312, 10);
    head.writeUInt32LE(options.inputSampleRate, 12);
    head.writeInt16LE(0, 16); // output gain
    head[18] = 0; // mapping family 0: mono or stereo
    this.page([head], 0n, HEADER_TYPE_BOS);
    const vendor = Buffer.from(options.vendor ?? 'sovereign-voice-agent', 'utf8');
    const tags = Buffer.alloc(8 + 4 + vendor.length + 4);
    tags.write('OpusTags', 0, 'ascii');
    tags.writeUInt32LE(vendor.length, 8);
    vendor.copy(tags, 12);
    tags.writeUInt32LE(0, 12 + vendor.length);
    this.page([tags], 0n, 0);
  }

  /** One Opus packet of `samples48k` samples (at 48 kHz: 960 for 20 ms). Pages hold up to 50 packets (1 s). */
  packet(data: Uint8Array, samples48k: number): void {
    this.pending.push(data);
    this.granule += BigInt(samples48k);
    if (this.pending.length >= 50) this.flush();
  }

  /** Write what is pending as a page (`last`: the end-of-stream page). */
  flush(last = false): void {
    if (this.pending.length === 0 && !last) return;
    const packets = this.pending;
    this.pending = [];
    this.page(packets, this.granule, last ? HEADER_TYPE_EOS : 0);
  }

  private page(packets: Uint8Array[], granule: bigint, type: number): void {
    const lacing: number[] = [];
    for (const p of packets) {
      let left = p.length;
      while (left >= 255) {
        lacing.push(255);
        left -= 255;
      }
      lacing.push(left);
    }
    if (lacing.length > 255) throw new Error('Ogg page over 255 segments');
    const header = Buffer.alloc(27 + lacing.length);
    header.write('OggS', 0, 'ascii');
    header[4] = 0;
    header[5] = type;
    header.writeBigUInt64LE(granule, 6);
    header.writeUInt32LE(this.serial, 14);
    header.writeUInt32LE(this.sequence++, 18);
    header.writeUInt32LE(0, 22);
    header[26] = lacing.length;
    lacing.forEach((v, i) => (header[27 + i] = v));
    const page = Buffer.concat([header, ...packets]);
    page.writeUInt32LE(oggCrc(page), 22);
    this.write(page);
  }
}

/** Pages of an Ogg stream, for checks and tests: each page's header fields and its packets. */
export function readOggPages(data: Buffer): { type: number; granule: bigint; serial: number; sequence: number; packets: Buffer[]; crcOk: boolean }[] {
  const pages = [];
  let at = 0;
  let carry: Buffer[] = [];
  while (at + 27 <= data.length && data.toString('ascii', at, at + 4) === 'OggS') {
    const count = data[at + 26];
    const lacing = [...data.subarray(at + 27, at + 27 + count)];
    const bodyStart = at + 27 + count;
    const length = lacing.reduce((a, b) => a + b, 0);
    const page = Buffer.from(data.subarray(at, bodyStart + length));
    const crc = page.readUInt32LE(22);
    page.writeUInt32LE(0, 22);
    const packets: Buffer[] = [];
    let offset = bodyStart;
    for (const v of lacing) {
      carry.push(data.subarray(offset, offset + v));
      offset += v;
      if (v < 255) {
        packets.push(Buffer.concat(carry));
        carry = [];
      }
    }
    pages.push({ type: data[at + 5], granule: data.readBigUInt64LE(at + 6), serial: data.readUInt32LE(at + 14), sequence: data.readUInt32LE(at + 18), packets, crcOk: oggCrc(page) === crc });
    at = bodyStart + length;
  }
  return pages;
}
