#!/usr/bin/env bash
# Checks the playground page (GET /) in headless Chromium (Debian's `chromium` package): starts
# `lmfuse serve` with a MiniLM + logistic-regression bundle, opens /?text=... (the page predicts
# on load), checks that the rendered DOM shows the predicted label and its probability bars,
# and saves a screenshot to bench/results/playground.png.
#
#   bash bench/playground_screenshot.sh ["text to classify"]
#   BUNDLE=out/reviews-model bash bench/playground_screenshot.sh   # an existing bundle
set -euo pipefail
cd "$(dirname "$0")/.."
text="${1:-The screen cracked on day two and support never answered. Avoid.}"
browser="$(command -v chromium || command -v chromium-browser || true)"
[ -n "$browser" ] || { echo "playground: chromium not found (apt-get install -y chromium)" >&2; exit 1; }
bash scripts/fetch-models.sh >&2
cargo build --release --locked --quiet -p lmfuse-cli
bin=./target/release/lmfuse
work="$(mktemp -d)"
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then kill "$server_pid" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT
bundle="${BUNDLE:-$work/bundle}"
if [ ! -f "$bundle/manifest.json" ]; then
  "$bin" -q train --model models/all-MiniLM-L6-v2 --train examples/reviews.jsonl --out "$bundle" \
    --cache-dir "$work/cache" --json > /dev/null
fi
"$bin" serve --model "$bundle" --port 0 2> "$work/serve.log" &
server_pid=$!
url=""
for _ in $(seq 1 600); do
  url="$(sed -n 's/.*listening on \(http:[^ ]*\).*/\1/p' "$work/serve.log" | head -1)"
  [ -n "$url" ] && curl -fsS "$url/ready" > /dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "$url/ready" > /dev/null || { cat "$work/serve.log" >&2; exit 1; }
expected="$(curl -fsS -H 'Content-Type: application/json' \
  -d "$(python3 -c 'import json,sys; print(json.dumps({"inputs": sys.argv[1]}))' "$text")" \
  "$url/classify" | python3 -c 'import json,sys; print(json.load(sys.stdin)["label"])')"
page="$url/?text=$(python3 -c 'import urllib.parse,sys; print(urllib.parse.quote(sys.argv[1]))' "$text")"
flags=(--headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=900,560
       --virtual-time-budget=5000 --user-data-dir="$work/profile")
"$browser" "${flags[@]}" --dump-dom "$page" > "$work/dom.html" 2> "$work/chromium.log"
label="$(python3 -c '
import re, sys
dom = open(sys.argv[1]).read()
m = re.search(r"<div id=\"label\">([^<]*)</div>", dom)
bars = len(re.findall(r"class=\"bar( top)?\"", dom))
print((m.group(1) if m else "") + "|" + str(bars))' "$work/dom.html")"
mkdir -p bench/results
"$browser" "${flags[@]}" --screenshot=bench/results/playground.png "$page" 2>> "$work/chromium.log"
shown="${label%|*}"; bars="${label#*|}"
echo "playground: the API says \"$expected\"; the page shows \"$shown\" with $bars probability bars"
echo "playground: screenshot in bench/results/playground.png"
[ "$shown" = "$expected" ] && [ "$bars" -ge 2 ] || { echo "playground: FAIL" >&2; exit 1; }
