#!/bin/sh
# Installs what the containerd end-to-end tests (STRATA_E2E=1 go test
# ./internal/e2e) need, idempotently: containerd (1.6 on Debian 12), runc,
# umoci (builds the test image) and busybox-static (the image's only binary).
# Run as root; `make e2e` and .ci/run call it before the tests.
set -eu
pkgs="containerd runc umoci busybox-static"
missing=""
for p in $pkgs; do
	dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null | grep -q '^install ok installed$' || missing="$missing $p"
done
if [ -z "$missing" ]; then
	echo "setup.sh: already installed: $pkgs"
	exit 0
fi
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# --no-install-recommends keeps it to the four packages and their needs.
apt-get install -y -qq --no-install-recommends $missing
# The Debian package may start a system containerd; the tests run their own
# and do not need it, but leave it alone if the admin wants it.
echo "setup.sh: installed:$missing"
