# Helpers sourced by the bench scripts.

# run_to FILE CMD...: CMD's stdout to FILE, replacing it only when CMD succeeds, so that a
# failed or interrupted run leaves the previous results as they were.
run_to() {
  local file="$1"; shift
  "$@" > "$file.tmp" && mv "$file.tmp" "$file"
}

# bench_init SCRIPT: the preamble of the bench scripts run from the repository root. Sets
# $data (the shared data sets; SCRIPT exits with a message when absent) and $lm (LMFUSE_BIN,
# else target/release/lmfuse, built now), and fetches the models (converting the multilingual
# one with $lm).
bench_init() {
  data="${LMFUSE_SHARED_DIR:-../shared}/data"
  [ -d "$data" ] || { echo "$1: $data not found" >&2; exit 1; }
  lm="${LMFUSE_BIN:-./target/release/lmfuse}"
  [ -n "${LMFUSE_BIN:-}" ] || cargo build --release --locked --quiet
  LMFUSE_BIN="$(realpath "$lm")" bash scripts/fetch-models.sh >&2
}

# start_monitor CONFIG DB LOG: `$lm monitor run` on a free port in the background, its stderr
# to LOG; sets $pid and $url once it listens (up to five minutes: a model's drift reference is
# computed at start-up).
start_monitor() {
  "$lm" monitor run --config "$1" --db "$2" --port 0 2> "$3" &
  pid=$!
  for _ in $(seq 3000); do grep -q "listening on" "$3" && break; sleep 0.1; done
  url=$(grep -o "http://[0-9.:]*" "$3" | head -1)
  [ -n "$url" ] || { echo "monitor did not start: see $3" >&2; exit 1; }
}
