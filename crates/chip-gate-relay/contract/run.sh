#!/usr/bin/env bash
# The relay's signatures, checked by the Standard Webhooks libraries of two other languages
# (PyPI `standardwebhooks`, npm `standardwebhooks`): each verifies a request the relay signed,
# and refuses it once its body or signature is changed. Installs both into a temporary folder.
set -euo pipefail
cd "$(dirname "$0")/../../.."
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" install --quiet --disable-pip-version-check standardwebhooks
(cd "$work" && npm install --silent --no-audit --no-fund standardwebhooks >/dev/null)
cargo run --quiet -p chip-gate-relay --example sign_sample >"$work/sample.json"

"$work/venv/bin/python" - "$work/sample.json" <<'PY'
import json, sys
from standardwebhooks.webhooks import Webhook
sample = json.load(open(sys.argv[1]))
wh = Webhook(sample["secret"])
wh.verify(sample["body"], sample["headers"])
for bad in (sample["body"] + " ", sample["body"].replace("a", "b", 1)):
    try:
        wh.verify(bad, sample["headers"])
    except Exception:
        continue
    sys.exit("python accepted a changed body")
print("python standardwebhooks: verified, and refused changed bodies")
PY

NODE_PATH="$work/node_modules" node - "$work/sample.json" <<'JS'
const fs = require("fs");
const { Webhook } = require("standardwebhooks");
const sample = JSON.parse(fs.readFileSync(process.argv[2], "utf8"));
const wh = new Webhook(sample.secret);
wh.verify(sample.body, sample.headers);
const headers = { ...sample.headers, "webhook-signature": "v1,AAAA" };
let refused = false;
try { wh.verify(sample.body, headers); } catch (e) { refused = true; }
if (!refused) { console.error("node accepted a wrong signature"); process.exit(1); }
console.log("node standardwebhooks: verified, and refused a wrong signature");
JS
