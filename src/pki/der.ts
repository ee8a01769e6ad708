// The little DER the leaf certificates need (RFC 5280 / X.690): encoding a TBSCertificate's
// fields, and reading the three parts of a CA certificate a leaf copies (subject, public key,
// notAfter). Leaves are issued per build, so this runs in the operator's hot path; a general
// ASN.1 library (asn1js under @peculiar/x509) cost ~4 ms of CPU per certificate, this ~0.1 ms.

/** One DER TLV: tag, definite length, contents. */
export function tlv(tag: number, ...contents: Uint8Array[]): Uint8Array {
  const length = contents.reduce((sum, part) => sum + part.length, 0);
  const header =
    length < 0x80
      ? [tag, length]
      : length < 0x100
        ? [tag, 0x81, length]
        : length < 0x10000
          ? [tag, 0x82, length >> 8, length & 0xff]
          : [tag, 0x83, length >> 16, (length >> 8) & 0xff, length & 0xff];
  return Buffer.concat([Uint8Array.from(header), ...contents]);
}

export const TAG = {
  boolean: 0x01,
  integer: 0x02,
  bitString: 0x03,
  octetString: 0x04,
  oid: 0x06,
  utf8String: 0x0c,
  utcTime: 0x17,
  generalizedTime: 0x18,
  sequence: 0x30,
  set: 0x31,
} as const;

export const sequence = (...parts: Uint8Array[]) => tlv(TAG.sequence, ...parts);

/** An OBJECT IDENTIFIER from its dotted form. */
export function oid(dotted: string): Uint8Array {
  const [first, second, ...rest] = dotted.split(".").map(Number) as [number, number, ...number[]];
  const bytes = [first * 40 + second];
  for (const arc of rest) {
    const chunk = [arc & 0x7f];
    for (let value = Math.floor(arc / 0x80); value > 0; value = Math.floor(value / 0x80))
      chunk.unshift((value & 0x7f) | 0x80);
    bytes.push(...chunk);
  }
  return tlv(TAG.oid, Uint8Array.from(bytes));
}

/** A positive INTEGER from big-endian bytes (a 0 is prepended when the top bit is set). */
export function positiveInteger(bytes: Uint8Array): Uint8Array {
  let start = 0;
  while (start < bytes.length - 1 && bytes[start] === 0 && (bytes[start + 1] as number) < 0x80)
    start++;
  const value = bytes.subarray(start);
  return tlv(
    TAG.integer,
    (value[0] as number) >= 0x80 ? Buffer.concat([Uint8Array.of(0), value]) : value,
  );
}

/** UTCTime through 2049, GeneralizedTime after (RFC 5280 4.1.2.5), whole seconds, UTC. */
export function time(date: Date): Uint8Array {
  const iso = date.toISOString(); // 2026-03-01T12:00:00.000Z
  const digits = `${iso.slice(0, 4)}${iso.slice(5, 7)}${iso.slice(8, 10)}${iso.slice(11, 13)}${iso.slice(14, 16)}${iso.slice(17, 19)}Z`;
  const year = date.getUTCFullYear();
  return year >= 1950 && year < 2050
    ? tlv(TAG.utcTime, Buffer.from(digits.slice(2), "ascii"))
    : tlv(TAG.generalizedTime, Buffer.from(digits, "ascii"));
}

export const utf8 = (text: string) => tlv(TAG.utf8String, Buffer.from(text, "utf8"));
export const octets = (bytes: Uint8Array) => tlv(TAG.octetString, bytes);
/** A BIT STRING of whole bytes (no unused bits). */
export const bits = (bytes: Uint8Array) => tlv(TAG.bitString, Uint8Array.of(0), bytes);

/** One TLV read from `der` at `offset`: its tag, contents, and where it ends. */
export interface Element {
  tag: number;
  /** The whole element, header included. */
  raw: Uint8Array;
  contents: Uint8Array;
  end: number;
}

export function read(der: Uint8Array, offset = 0): Element {
  const tag = der[offset];
  let length = der[offset + 1];
  if (tag === undefined || length === undefined) throw new Error("truncated DER");
  let header = 2;
  if (length >= 0x80) {
    const count = length & 0x7f;
    if (count === 0 || count > 3) throw new Error("unsupported DER length");
    length = 0;
    for (let i = 0; i < count; i++) length = length * 256 + (der[offset + 2 + i] ?? 0);
    header += count;
  }
  const end = offset + header + length;
  if (end > der.length) throw new Error("truncated DER");
  return {
    tag,
    raw: der.subarray(offset, end),
    contents: der.subarray(offset + header, end),
    end,
  };
}

/** The elements directly inside a constructed element's contents. */
export function children(contents: Uint8Array): Element[] {
  const out: Element[] = [];
  for (let offset = 0; offset < contents.length; ) {
    const element = read(contents, offset);
    out.push(element);
    offset = element.end;
  }
  return out;
}

/** The parts of a certificate (DER) a certificate it signs copies or derives from. */
export function certificateParts(der: Uint8Array): {
  /** The subject Name, as encoded: a leaf's issuer must match it byte for byte. */
  subject: Uint8Array;
  /** The subjectPublicKey BIT STRING's key bytes (RFC 5280 4.2.1.2's key identifier input). */
  publicKey: Uint8Array;
} {
  const [tbs] = children(read(der).contents);
  if (!tbs) throw new Error("not a certificate");
  const fields = children(tbs.contents);
  // version [0] is optional (v1 certificates have none).
  const at = fields[0]?.tag === 0xa0 ? 1 : 0;
  const subject = fields[at + 4];
  const spki = fields[at + 5];
  if (!subject || !spki) throw new Error("not a certificate");
  return { subject: subject.raw, publicKey: publicKeyBits(spki.raw) };
}

/** The key bytes of a SubjectPublicKeyInfo's subjectPublicKey BIT STRING (unused-bits byte off). */
export function publicKeyBits(spki: Uint8Array): Uint8Array {
  const key = children(read(spki).contents)[1];
  if (!key || key.tag !== TAG.bitString) throw new Error("not a SubjectPublicKeyInfo");
  return key.contents.subarray(1);
}
