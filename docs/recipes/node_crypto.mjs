// A webhook receiver with Node's standard library only (node:http, node:crypto).
//
//   WEBHOOK_SECRET=whsec_... PORT=9000 node node_crypto.mjs       # X-Bjet24-Signature (HMAC)
//   WEBHOOK_PUBLIC_KEY=whpk_... PORT=9000 node node_crypto.mjs    # webhook-signature v1a (ed25519)
//
// Answers 200 (processed, or a duplicate), 400 (signature headers missing or malformed, or a
// timestamp more than 5 minutes away) or 401 (no signature matches). Prints one line per
// event it accepts. Keep processed event ids in your database, not in memory.
import { createHmac, createPublicKey, timingSafeEqual, verify } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.WEBHOOK_SECRET; // the whole string, whsec_ included
const PUBLIC_KEY = process.env.WEBHOOK_PUBLIC_KEY; // whpk_ + base64 of the raw 32-byte key
const HEADER = (process.env.SIGNATURE_HEADER ?? "X-Bjet24-Signature").toLowerCase();
const TOLERANCE_SECONDS = 300;
const processed = new Set();

const fresh = (t) => Math.abs(Date.now() / 1000 - t) <= TOLERANCE_SECONDS;

// X-Bjet24-Signature: t=<unix seconds>,v1=<hex>[,v1=<hex>...]. Keep EVERY v1: during a
// secret rotation there is one per active secret, and any of them may be the one you hold.
function checkHmac(headers, raw) {
  const header = headers[HEADER];
  if (!header) return 400;
  let t = null;
  const signatures = [];
  for (const item of header.split(",")) {
    const [key, value] = [item.slice(0, item.indexOf("=")), item.slice(item.indexOf("=") + 1)];
    if (key === "t" && /^\d+$/.test(value)) t = Number(value);
    else if (key === "v1") signatures.push(Buffer.from(value, "hex"));
  }
  if (t === null || signatures.length === 0 || !fresh(t)) return 400;
  const expected = createHmac("sha256", SECRET).update(`${t}.`).update(raw).digest();
  const match = signatures.some((s) => s.length === expected.length && timingSafeEqual(s, expected));
  return match ? null : 401;
}

// webhook-signature: v1a,<base64> [v1a,<base64> ...], ed25519 over "<id>.<timestamp>.<body>".
function checkEd25519(headers, raw) {
  const id = headers["webhook-id"];
  const timestamp = headers["webhook-timestamp"];
  const signatures = headers["webhook-signature"];
  if (!id || !/^\d+$/.test(timestamp ?? "") || !signatures) return 400;
  if (!fresh(Number(timestamp))) return 400;
  const key = createPublicKey({
    format: "jwk",
    key: { kty: "OKP", crv: "Ed25519", x: Buffer.from(PUBLIC_KEY.slice(5), "base64").toString("base64url") },
  });
  const signed = Buffer.concat([Buffer.from(`${id}.${timestamp}.`), raw]);
  const match = signatures.split(" ").some((entry) => {
    const [version, signature] = entry.split(",");
    return version === "v1a" && verify(null, signed, key, Buffer.from(signature ?? "", "base64"));
  });
  return match ? null : 401;
}

createServer((req, res) => {
  const chunks = [];
  req.on("data", (chunk) => chunks.push(chunk));
  req.on("end", () => {
    const raw = Buffer.concat(chunks); // the raw bytes: the signature covers exactly these
    const refused = PUBLIC_KEY ? checkEd25519(req.headers, raw) : checkHmac(req.headers, raw);
    if (refused !== null) {
      res.writeHead(refused).end("signature refused");
      return;
    }
    const event = JSON.parse(raw.toString("utf8"));
    if (processed.has(event.event_id)) {
      console.log("duplicate", event.event_id);
      res.writeHead(200).end("duplicate");
      return;
    }
    processed.add(event.event_id);
    console.log("processed", event.event_id, event.event_type);
    res.writeHead(200).end("ok"); // answer fast; do slow work after, from your own queue
  });
}).listen(Number(process.env.PORT ?? 9000), "127.0.0.1");
