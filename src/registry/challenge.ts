// WWW-Authenticate (RFC 9110 §11.6.1): one or more challenges, each a scheme followed by
// comma-separated auth-params whose values may be quoted strings with backslash escapes.

export interface Challenge {
  /** Lower-cased: `basic`, `bearer`. */
  scheme: string;
  /** Parameter names lower-cased; values unquoted. */
  params: Record<string, string>;
}

const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+/;

export function parseWwwAuthenticate(header: string | null | undefined): Challenge[] {
  if (!header) return [];
  const challenges: Challenge[] = [];
  let rest = header;
  let current: Challenge | undefined;

  const skip = (pattern: RegExp) => {
    rest = rest.replace(pattern, "");
  };

  while (rest.length > 0) {
    skip(/^[\s,]+/);
    if (rest.length === 0) break;
    const token = TOKEN.exec(rest)?.[0];
    if (!token) break; // malformed: keep what was understood
    const afterToken = rest.slice(token.length);
    const isParam = /^\s*=/.test(afterToken) && !/^\s*==*\s*(,|$)/.test(afterToken);
    if (isParam && current) {
      rest = afterToken.replace(/^\s*=\s*/, "");
      let value: string;
      if (rest.startsWith('"')) {
        let i = 1;
        value = "";
        while (i < rest.length && rest[i] !== '"') {
          if (rest[i] === "\\" && i + 1 < rest.length) i++;
          value += rest[i];
          i++;
        }
        rest = rest.slice(i + 1);
      } else {
        // A token by the RFC; registries are seen sending bare URLs too, so read to the comma.
        value = /^[^\s,]*/.exec(rest)?.[0] ?? "";
        rest = rest.slice(value.length);
      }
      current.params[token.toLowerCase()] = value;
    } else {
      current = { scheme: token.toLowerCase(), params: {} };
      challenges.push(current);
      rest = afterToken;
      // token68 form (`Negotiate abc==`): consume it, it carries no params we use.
      const token68 = /^\s+([A-Za-z0-9._~+/-]+=*)\s*(,|$)/.exec(rest);
      if (token68 && !/^\s+[!#$%&'*+.^_`|~0-9A-Za-z-]+\s*=[^=]/.test(rest)) {
        rest = rest.slice(token68[0].length);
      }
    }
  }
  return challenges;
}
