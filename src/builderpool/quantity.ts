// Kubernetes quantities ("40Gi", "500M", "1.5e9") as whole bytes. BuildKit reads sizes with
// go-units, where "M" means 2^20 and Kubernetes means 10^6, so the operator converts to a plain
// byte count itself instead of passing the text on.
import { QUANTITY } from "../api/meta.ts";

const BINARY: Record<string, bigint> = {
  Ki: 1n << 10n,
  Mi: 1n << 20n,
  Gi: 1n << 30n,
  Ti: 1n << 40n,
  Pi: 1n << 50n,
  Ei: 1n << 60n,
};
const DECIMAL_EXPONENT: Record<string, number> = {
  n: -9,
  u: -6,
  m: -3,
  "": 0,
  k: 3,
  M: 6,
  G: 9,
  T: 12,
  P: 15,
  E: 18,
};

/** The exact value of a quantity as a fraction; throws for a negative or bad one. */
function quantityFraction(quantity: string | number): { numerator: bigint; denominator: bigint } {
  if (typeof quantity === "number") {
    if (!Number.isSafeInteger(quantity) || quantity < 0) {
      throw new Error(`${quantity} is not a whole, non-negative number`);
    }
    return { numerator: BigInt(quantity), denominator: 1n };
  }
  const match = /^(\+)?(\d+(?:\.\d*)?|\.\d+)((?:[KMGTPE]i)|[numkMGTPE]|(?:[eE][+-]?\d+))?$/.exec(
    quantity,
  );
  if (!QUANTITY.test(quantity) || !match) {
    throw new Error(`${JSON.stringify(quantity)} is not a non-negative Kubernetes quantity`);
  }
  const [whole = "", fraction = ""] = (match[2] as string).split(".");
  const digits = BigInt(`${whole}${fraction}` || "0");
  let numerator = digits;
  let denominator = 10n ** BigInt(fraction.length);
  const suffix = match[3] ?? "";
  if (suffix in BINARY) {
    numerator *= BINARY[suffix] as bigint;
  } else {
    const exponent =
      suffix.startsWith("e") || suffix.startsWith("E")
        ? Number(suffix.slice(1))
        : (DECIMAL_EXPONENT[suffix] as number);
    if (exponent >= 0) numerator *= 10n ** BigInt(exponent);
    else denominator *= 10n ** BigInt(-exponent);
  }
  return { numerator, denominator };
}

/** The quantity as a whole number of bytes, rounded up; throws for a negative or bad one. */
export function quantityToBytes(quantity: string | number): bigint {
  const { numerator, denominator } = quantityFraction(quantity);
  return (numerator + denominator - 1n) / denominator;
}

/** -1, 0 or 1 as `a` is less than, equal to or more than `b` ("500m" < "1" = "1000m"). */
export function compareQuantities(a: string | number, b: string | number): -1 | 0 | 1 {
  const x = quantityFraction(a);
  const y = quantityFraction(b);
  const left = x.numerator * y.denominator;
  const right = y.numerator * x.denominator;
  return left < right ? -1 : left > right ? 1 : 0;
}

/**
 * Requests above their own limit in one container's resources (`{requests, limits}` as in a
 * spec), one line each naming the field: the API server would refuse the pod.
 */
export function requestsAboveLimits(
  resources:
    | { requests?: Record<string, string | number>; limits?: Record<string, string | number> }
    | undefined,
  path: string,
): string[] {
  const problems: string[] = [];
  for (const [key, request] of Object.entries(resources?.requests ?? {})) {
    const limit = resources?.limits?.[key];
    // A quantity this cannot read is the schema's to refuse, not this check's.
    const above = (() => {
      try {
        return limit !== undefined && compareQuantities(request, limit) > 0;
      } catch {
        return false;
      }
    })();
    if (above)
      problems.push(
        `${path}.requests.${key}: ${request} is more than ${path}.limits.${key} (${limit}); a request may not exceed its limit`,
      );
  }
  return problems;
}
