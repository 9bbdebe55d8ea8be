#!/usr/bin/env bash
# peers.sh — install the npm-based test peers at the exact versions locked in
# their package-lock.json files (tests/peers/*/package.json), with `npm ci`.
#
# node-snap7's install script is `prebuild-install || node-gyp rebuild`: with
# internet access prebuild-install would download a prebuilt binary from a
# code-hosting site.  npm_config_build_from_source=true makes it skip that, so
# snap7 is always compiled here from the sources in the npm package, against
# Node's own headers (npm_config_nodedir=/usr, no header download either); the
# script checks that the compiled objects are there.
#
# A peer is kept when its node_modules was installed from the same lock file
# with the same Node version (a stamp file records both: node-snap7 is a native
# module built for one Node ABI).  Each npm run says what it does and how long
# it took (npm itself is silent for 10–70 s per peer).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v node >/dev/null && command -v npm >/dev/null ||
    { echo "peers: node and npm are needed (scripts/deps.sh test installs them)" >&2; exit 1; }
node_v=$(node --version)
export npm_config_build_from_source=true npm_config_nodedir=/usr
rc=0
for pj in tests/peers/*/package.json; do
    d=$(dirname "$pj")
    stamp="$d/node_modules/.fieldbridge-peers"
    want="$(sha256sum "$d/package-lock.json" | cut -d' ' -f1) node $node_v"
    deps=$(sed -n '/"dependencies"/,/}/p' "$pj" | grep -o '"[^"]*": *"[^"]*"' |
           tr -d '" ' | tr ':' '@' | paste -sd' ' -)
    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        echo "peers: $d up to date ($deps on Node $node_v)"
        continue
    fi
    echo "peers: npm ci in $d ($deps on Node $node_v; 10-70 s, npm prints nothing meanwhile)"
    t0=$(date +%s)
    if (cd "$d" && npm ci --no-audit --no-fund --loglevel=error); then
        echo "peers: $d installed in $(( $(date +%s) - t0 )) s"
        echo "$want" >"$stamp"
    else
        echo "peers: npm ci in $d FAILED after $(( $(date +%s) - t0 )) s" >&2
        rc=1
    fi
done
# what is tested is what the lock file says: snap7 compiled here, not downloaded
if [ -d tests/peers/s7/node_modules/node-snap7 ] &&
   [ ! -d tests/peers/s7/node_modules/node-snap7/build/Release/obj.target ]; then
    echo "peers: node-snap7 was not compiled from source (no build/Release/obj.target)" >&2
    rm -f tests/peers/s7/node_modules/.fieldbridge-peers
    rc=1
fi
exit $rc
