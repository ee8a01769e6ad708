import { createHash } from "node:crypto";

/** A sha256 content digest, the only algorithm `assemble` reads or writes. */
export const SHA256_DIGEST = /^sha256:[a-f0-9]{64}$/;

export function sha256Digest(bytes: Uint8Array): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

export function isSha256Digest(value: string): boolean {
  return SHA256_DIGEST.test(value);
}
