#!/usr/bin/env bash
# deb.sh — build the Debian package (debian/) from a clean copy of this tree.
#   scripts/deb.sh [OUTDIR]        default OUTDIR: build-deb/
# The copy holds the files git knows (committed or not, ignored ones left out),
# so build directories never leak into the package.  DEB_BUILD_OPTIONS is passed
# on; by default `nocheck` (build only the program: the unit tests run in
# scripts/test.sh; also as the build profile) and parallel=$(nproc).  Needs the Build-Depends of
# debian/control (scripts/deps.sh test installs them) and dpkg-buildpackage.
set -euo pipefail
cd "$(dirname "$0")/.."
out=$(realpath -m "${1:-build-deb}")
rm -rf "$out"
mkdir -p "$out/src"
git ls-files -co --exclude-standard -z | tar --null -T - -cf - | tar -xf - -C "$out/src"
export DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-nocheck parallel=$(nproc 2>/dev/null || echo 2)}"
# nocheck as a build profile too: then cmocka (Build-Depends <!nocheck>) is not needed
case " $DEB_BUILD_OPTIONS " in *" nocheck "*) export DEB_BUILD_PROFILES="${DEB_BUILD_PROFILES:-nocheck}" ;; esac
echo "deb: dpkg-buildpackage -b (DEB_BUILD_OPTIONS=$DEB_BUILD_OPTIONS DEB_BUILD_PROFILES=${DEB_BUILD_PROFILES:-}) in $out/src"
t0=$(date +%s)
(cd "$out/src" && dpkg-buildpackage -b -us -uc) >"$out/build.log" 2>&1 || {
    tail -40 "$out/build.log" >&2; echo "deb: dpkg-buildpackage failed (log: $out/build.log)" >&2; exit 1; }
rm -rf "$out/src"
echo "deb: built in $(( $(date +%s) - t0 )) s:"
ls -1 "$out"/*.deb
