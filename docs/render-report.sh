#!/bin/sh
# Regenerates docs/report-example.html and docs/report-example.png: the demo's
# simulated hypertension registry (ten hospitals) fitted with `fedmix local
# --report`, rendered by headless Chromium (Debian: apt-get install chromium).
#   docs/render-report.sh [FEDMIX]      (default: .build/debug/fedmix)
set -eu
cd "$(dirname "$0")/.."
FEDMIX=${1:-.build/debug/fedmix}
CHROMIUM=${CHROMIUM:-chromium}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$FEDMIX" demo --in-process --keep "$work/registry" --output "$work/demo.txt"
"$FEDMIX" local "$work/registry" --in-process --quiet \
    --formula 'sbp_12wk ~ baseline_sbp + age + sex + treatment + (1 | site)' \
    --format json --output "$work/fit.json" --report docs/report-example.html
"$CHROMIUM" --headless --no-sandbox --disable-gpu --hide-scrollbars \
    --screenshot="$PWD/docs/report-example.png" --window-size=1200,3250 \
    "file://$PWD/docs/report-example.html" 2>/dev/null
echo "wrote docs/report-example.html and docs/report-example.png"
