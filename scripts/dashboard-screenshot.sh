#!/usr/bin/env bash
# Refreshes docs/img/monitor-dashboard.png: the dashboard test's page (a simulated week) shot by
# headless chromium (`bash scripts/install-chromium.sh` first).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p docs/img
LMFUSE_DASHBOARD_SCREENSHOT="$PWD/docs/img/monitor-dashboard.png" \
  cargo test --profile "${LMFUSE_CARGO_PROFILE:-ci}" -p lmfuse-cli --test monitor \
  the_dashboard_draws_the_series_and_marks_every_burst_alert
ls -l docs/img/monitor-dashboard.png
