// PEM text to DER bytes and back (RFC 7468). Errors name the expected label, never the content.

export type PemLabel = "CERTIFICATE" | "PRIVATE KEY" | "EC PRIVATE KEY" | "PUBLIC KEY";

const BLOCK = /-----BEGIN ([A-Z0-9 ]+)-----([\s\S]*?)-----END \1-----/g;

/** One PEM block: 64-character base64 lines between BEGIN and END, ending in a newline. */
export function pemEncode(label: PemLabel, der: Uint8Array): string {
  const base64 = Buffer.from(der.buffer, der.byteOffset, der.byteLength).toString("base64");
  const lines = base64.match(/.{1,64}/g) ?? [];
  return `-----BEGIN ${label}-----\n${lines.join("\n")}\n-----END ${label}-----\n`;
}

/** Every block of the text, in order, whatever its label. */
export function pemBlocks(text: string): { label: string; der: Uint8Array }[] {
  const blocks: { label: string; der: Uint8Array }[] = [];
  for (const match of text.matchAll(BLOCK)) {
    const body = (match[2] as string).replace(/\s+/g, "");
    if (!/^[A-Za-z0-9+/]*={0,2}$/.test(body) || body.length % 4 !== 0) {
      throw new Error(`a PEM ${match[1]} block is not valid base64`);
    }
    blocks.push({ label: match[1] as string, der: new Uint8Array(Buffer.from(body, "base64")) });
  }
  return blocks;
}

/** The DER bytes of every block with `label`; throws when there is none. */
export function pemDecodeAll(text: string, label: PemLabel): Uint8Array[] {
  const found = pemBlocks(text)
    .filter((block) => block.label === label)
    .map((block) => block.der);
  if (found.length === 0) throw new Error(`no PEM ${label} block found`);
  return found;
}

/** The DER bytes of the one block with `label`; throws when there is none or several. */
export function pemDecode(text: string, label: PemLabel): Uint8Array {
  const found = pemDecodeAll(text, label);
  if (found.length > 1) throw new Error(`expected one PEM ${label} block, found ${found.length}`);
  return found[0] as Uint8Array;
}
