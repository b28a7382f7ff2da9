// The Bjet24 article's Next.js handler (docs: "Example: Next.js handler"), run on node:http
// with its verification lines unchanged, including its parser:
//   Object.fromEntries(header.split(",").map((kv) => kv.split("=")))
// which keeps only the LAST v1= of the header. The tests run it against real deliveries to
// show what happens to such a receiver during a secret rotation. Not a recipe to copy: see
// docs/recipes/node_crypto.mjs, which checks every v1=.
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.BJET24_WEBHOOK_SECRET;

function POST(raw, header) {
  const parts = Object.fromEntries(
    header.split(",").map((kv) => kv.split("=")),
  )
  const ts = parts.t
  const sig = parts.v1
  if (!ts || !sig) return [400, "missing signature"]

  const tsNum = Number(ts)
  if (Math.abs(Date.now() / 1000 - tsNum) > 300) {
    return [400, "stale timestamp"]
  }

  const expected = createHmac("sha256", SECRET)
    .update(`${ts}.${raw}`)
    .digest("hex")

  const a = Buffer.from(expected, "hex")
  const b = Buffer.from(sig, "hex")
  if (a.length !== b.length || !timingSafeEqual(a, b)) {
    return [401, "invalid signature"]
  }

  const event = JSON.parse(raw)
  console.log("processed", event.event_id, event.event_type)
  return [200, "ok"]
}

createServer((req, res) => {
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const raw = Buffer.concat(chunks).toString("utf8"); // the article's `await req.text()`
    const [status, text] = POST(raw, req.headers["x-bjet24-signature"] ?? "");
    if (status !== 200) console.log("refused", status, text);
    res.writeHead(status).end(text);
  });
}).listen(Number(process.env.PORT), "127.0.0.1");
