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
