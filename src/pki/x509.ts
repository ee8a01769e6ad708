// @peculiar/x509, loaded the one way that works: the Reflect metadata polyfill first (its
// dependency tsyringe throws at import time without one), and Node's WebCrypto set as the
// provider explicitly rather than found through globalThis. Import the library only from here.
import "./reflect.ts";
import { webcrypto } from "node:crypto";
import * as x509 from "@peculiar/x509";

x509.cryptoProvider.set(webcrypto as typeof globalThis.crypto);

export { x509 };
