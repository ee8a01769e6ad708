// Private keys that cannot leak by accident. A PrivateKey prints, serialises and inspects as a
// redaction marker; its PEM text comes out only through exportPem(), which the one caller that
// needs it (the code writing a Secret's data) calls by name.
import {
  createPrivateKey,
  createPublicKey,
  generateKeyPairSync,
  type KeyObject,
  sign,
  webcrypto,
  X509Certificate,
} from "node:crypto";
import { inspect } from "node:util";
import { pemEncode } from "./pem.ts";

export const EC_ALGORITHM = { name: "ECDSA", namedCurve: "P-256" } as const;
export const SIGNING_ALGORITHM = { name: "ECDSA", hash: "SHA-256" } as const;

const REDACTED = "[PrivateKey redacted]";

export class PrivateKey {
  readonly #pem: string;
  readonly #key: KeyObject;

  private constructor(pem: string, key: KeyObject) {
    this.#pem = pem;
    this.#key = key;
  }

  /**
   * Reads a PKCS#8, SEC 1 ("EC PRIVATE KEY") or PKCS#1 PEM key. Only ECDSA P-256 keys are
   * accepted, since that is all this package issues. The error never quotes the input.
   */
  static fromPem(pem: string, what = "private key"): PrivateKey {
    let key: KeyObject;
    try {
      key = createPrivateKey({ key: pem, format: "pem" });
    } catch {
      throw new Error(`${what} is not a PEM private key`);
    }
    if (key.asymmetricKeyType !== "ec" || key.asymmetricKeyDetails?.namedCurve !== "prime256v1") {
      throw new Error(`${what} is not an ECDSA P-256 key`);
    }
    const pkcs8 = key.export({ type: "pkcs8", format: "der" });
    return new PrivateKey(pemEncode("PRIVATE KEY", new Uint8Array(pkcs8)), key);
  }

  static async fromCryptoKey(key: webcrypto.CryptoKey): Promise<PrivateKey> {
    const pkcs8 = new Uint8Array(await webcrypto.subtle.exportKey("pkcs8", key));
    return PrivateKey.fromPem(pemEncode("PRIVATE KEY", pkcs8));
  }

  /** Wraps a key this package generated (ECDSA P-256, see generateKeyObjects). */
  static fromKeyObject(key: KeyObject): PrivateKey {
    const pkcs8 = key.export({ type: "pkcs8", format: "der" });
    return new PrivateKey(pemEncode("PRIVATE KEY", new Uint8Array(pkcs8)), key);
  }

  /** An ECDSA SHA-256 signature of `data` (DER, as X.509 carries it). */
  sign(data: Uint8Array): Uint8Array {
    return new Uint8Array(sign("sha256", data, this.#key));
  }

  /** The PKCS#8 PEM text, for a Secret's data. Never log or return it anywhere else. */
  exportPem(): string {
    return this.#pem;
  }

  /** The matching public key as DER SubjectPublicKeyInfo. */
  publicKeyDer(): Uint8Array {
    return new Uint8Array(createPublicKey(this.#key).export({ type: "spki", format: "der" }));
  }

  /** A WebCrypto signing key for @peculiar/x509. */
  async signingKey(): Promise<webcrypto.CryptoKey> {
    const pkcs8 = this.#key.export({ type: "pkcs8", format: "der" });
    return webcrypto.subtle.importKey("pkcs8", pkcs8, EC_ALGORITHM, false, ["sign"]);
  }

  toString(): string {
    return REDACTED;
  }

  toJSON(): string {
    return REDACTED;
  }

  [inspect.custom](): string {
    return REDACTED;
  }
}

/** A fresh ECDSA P-256 key pair. */
export async function generateKeyPair(): Promise<webcrypto.CryptoKeyPair> {
  return webcrypto.subtle.generateKey(EC_ALGORITHM, true, ["sign", "verify"]);
}

/** A fresh ECDSA P-256 key pair as Node KeyObjects (synchronous: about 0.1 ms of CPU). */
export function generateKeyObjects(): { privateKey: KeyObject; publicKey: KeyObject } {
  return generateKeyPairSync("ec", { namedCurve: "prime256v1" });
}

/** True when `key` is the private half of the certificate's public key. */
export function keyMatchesCertificate(key: PrivateKey, certPem: string): boolean {
  try {
    const spki = new X509Certificate(certPem).publicKey.export({ type: "spki", format: "der" });
    return Buffer.from(key.publicKeyDer()).equals(spki);
  } catch {
    return false;
  }
}
