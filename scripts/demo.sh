#!/usr/bin/env bash
# A guided tour of `strata mount`: three lower layers (an override, a
# whiteout, an opaque dir), an upper dir, copy-up on write, a whiteout on
# delete. Run through `make demo` (it builds bin/strata); needs root.
set -euo pipefail

STRATA=${STRATA:-bin/strata}
if [[ $EUID -ne 0 ]]; then
	echo "demo: needs root (kernel overlayfs mounts, whiteout device nodes, trusted.* xattrs): run 'sudo make demo'" >&2
	exit 1
fi
if ! command -v setfattr >/dev/null; then
	echo "demo: installing attr (setfattr, getfattr)"
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq attr >/dev/null
fi
STRATA=$(realpath "$STRATA")

if [[ -t 1 ]]; then B=$'\e[1m' D=$'\e[2m' N=$'\e[0m'; else B= D= N=; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run() { printf '%s$ %s%s\n' "$D" "$*" "$N"; "$@"; }
runsh() { printf '%s$ %s%s\n' "$D" "$1" "$N"; sh -c "$1"; }
show() { # show DIR: every entry below DIR with its type, or (empty)
	local out
	out=$(cd "$1" && find . -mindepth 1 | sort | while read -r p; do
		if [[ -c $p ]]; then
			printf '  %-22s char device %s (a whiteout)\n' "${p#./}" "$(stat -c '%t,%T' "$p")"
		elif [[ -d $p ]]; then
			printf '  %-22s dir%s\n' "${p#./}/" "$(getfattr --absolute-names --only-values -n trusted.overlay.opaque "$p" 2>/dev/null | sed 's/^y$/ (opaque: trusted.overlay.opaque=y)/')"
		else
			printf '  %-22s "%s"\n' "${p#./}" "$(head -c 60 "$p" | sed -z 's/\n$//; s/\n/\\n/g')"
		fi
	done)
	echo "${out:-  (empty)}"
}

demo=$(mktemp -d /tmp/strata-demo.XXXXXX)
cleanup() {
	if mountpoint -q "$demo/merged" 2>/dev/null; then
		"$STRATA" umount "$demo/merged" || umount -l "$demo/merged"
	fi
	rm -rf "$demo"
}
trap cleanup EXIT
cd "$demo"

say "strata $("$STRATA" version | awk '/^strata:/ {print $2}'), working in $demo"

say "Three lower layers, bottom (layer1) to top (layer3)"
mkdir -p layer1/cache layer2/cache layer3 upper work merged
echo "hello from layer1" >layer1/greeting.txt
echo "layer1 file, deleted by layer3" >layer1/doomed.txt
echo "old cache entry" >layer1/cache/old-1
echo "old cache entry" >layer1/cache/old-2
echo "layer2 overrides layer1" >layer2/greeting.txt
echo "fresh cache entry" >layer2/cache/fresh
run setfattr -n trusted.overlay.opaque -v y layer2/cache
echo "port = 8080" >layer3/app.conf
run mknod layer3/doomed.txt c 0 0
for l in layer1 layer2 layer3; do
	echo "$l:"
	show "$l"
done

say "Mount them: lowerdir is topmost first, as in overlayfs and fuse-overlayfs"
run "$STRATA" mount -o lowerdir=layer3:layer2:layer1,upperdir=upper,workdir=work merged
run findmnt -n -o FSTYPE,OPTIONS merged || true

say "The union"
run ls -la merged merged/cache
run cat merged/greeting.txt
echo "(greeting.txt comes from layer2, doomed.txt is hidden by layer3's whiteout,"
echo " cache/ shows only layer2's entries because layer2/cache is opaque)"

say "Write through the mount"
runsh 'echo "edited in the container" >> merged/greeting.txt'
runsh 'echo "port = 9090" > merged/app.conf'
run rm merged/cache/fresh
run mkdir merged/logs
runsh 'echo "started" > merged/logs/app.log'
run cat merged/greeting.txt

say "What landed in the upper dir"
show upper
echo "(greeting.txt and app.conf were copied up whole before the write;"
echo " cache/fresh became a whiteout char device 0/0 in upper;"
echo " logs/ is new, so the kernel marked it opaque: nothing below can show through;"
echo " the lower layers did not change:)"
run cat layer2/greeting.txt

say "Unmount"
run "$STRATA" umount merged
run ls -A merged
echo
echo "Done: the upper dir is a layer in kernel overlayfs format; $demo is removed on exit."
