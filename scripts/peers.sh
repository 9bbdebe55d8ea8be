#!/usr/bin/env bash
# peers.sh — install the npm-based test peers at the exact versions locked in
# their package-lock.json files (tests/peers/*/package.json).  node-snap7
# compiles the snap7 library against Node's headers (npm_config_nodedir=/usr),
# about 20 s the first time; an existing, matching node_modules is kept.
set -euo pipefail
cd "$(dirname "$0")/.."
for pj in tests/peers/*/package.json; do
    d=$(dirname "$pj")
    if [ -d "$d/node_modules" ] && [ "$d/node_modules/.package-lock.json" -nt "$d/package-lock.json" ]; then
        echo "peers: $d up to date"
        continue
    fi
    echo "peers: npm ci in $d"
    (cd "$d" && npm_config_nodedir=/usr npm ci --no-audit --no-fund --loglevel=error)
done
