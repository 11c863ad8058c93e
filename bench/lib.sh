# Helpers sourced by the bench scripts.

# run_to FILE CMD...: CMD's stdout to FILE, replacing it only when CMD succeeds, so that a
# failed or interrupted run leaves the previous results as they were.
run_to() {
  local file="$1"; shift
  "$@" > "$file.tmp" && mv "$file.tmp" "$file"
}
