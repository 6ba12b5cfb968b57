#!/usr/bin/env bash
# Records what a GPU window brought back (the three files of scripts/gpu-window.sh's OUT) as a
# dated record, here, after the window:
#   scripts/record-results.sh OUT_FROM_WINDOW [RESULTS_DIR]     (default bench/results)
# writes RESULTS_DIR/<date>-<gpu>.md (commit, device, driver, versions, measured ceilings, every
# figure beside its peer and its target from bench/README.md, test / trainer / sanitizer status),
# .jsonl (the window, every job, every figure) and one PNG bar chart per benchmark; prints the
# .md's path.
# Standard library Python only (scripts/png_plot.py draws the PNGs). See bench/results/README.md.
set -euo pipefail
[ $# -ge 1 ] || { sed -n '2,9p' "$0"; exit 2; }
[ -f "$1/summary.json" ] || { echo "no $1/summary.json: not a gpu-window.sh OUT folder" >&2; exit 1; }
exec python3 "$(dirname "$0")/record_results.py" "$@"
