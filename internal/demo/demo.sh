#!/usr/bin/env bash
# A guided tour of strata: build a small three-layer OCI image (an
# override, a whiteout, an opaque dir), import it into a snapshot store,
# look at it (tree, layers, which, files), run a "container" on it (prepare,
# mount, write, diff --stat, umount, commit), check the store, and finish
# with the plain-directory form of mount. Run through `make demo` (it
# builds bin/strata); needs root. Everything lives in a temp dir that is
# removed on exit.
set -euo pipefail

STRATA=${STRATA:-bin/strata}
if [[ $EUID -ne 0 ]]; then
	echo "demo: needs root (kernel overlayfs mounts, whiteout device nodes, trusted.* xattrs): run 'sudo make demo'" >&2
	exit 1
fi
STRATA=$(realpath "$STRATA")

if [[ -t 1 ]]; then B=$'\e[1m' D=$'\e[2m' N=$'\e[0m'; else B= D= N=; fi
say() { printf '\n%s== %s%s\n' "$B" "$*" "$N"; }
run() { printf '%s$ %s%s\n' "$D" "$*" "$N"; "$@"; }
runsh() { printf '%s$ %s%s\n' "$D" "$1" "$N"; sh -c "$1"; }
note() { printf '%s\n' "$@"; }

demo=$(mktemp -d /tmp/strata-demo.XXXXXX)
cleanup() {
	for m in "$demo/rootfs" "$demo/plain/merged"; do
		if mountpoint -q "$m" 2>/dev/null; then
			"$STRATA" umount "$m" 2>/dev/null || umount -l "$m"
		fi
	done
	rm -rf "$demo"
}
trap cleanup EXIT
cd "$demo"
export STRATA_ROOT=$demo/store # every strata command below uses this store
strata() { printf '%s$ strata %s%s\n' "$D" "$*" "$N"; "$STRATA" "$@"; }

say "strata $("$STRATA" version | awk '/^strata:/ {print $2}'), working in $demo (STRATA_ROOT=$STRATA_ROOT)"

say "1. A small image as an OCI layout: three gzip layers"
strata debug make-demo-image image
note "(layer 1: /etc, /app/config/{a,b}.conf, /bin/hello, /var/cache/big;" \
	" layer 2: new /etc/motd, deletes /var/cache/big with a .wh.big whiteout;" \
	" layer 3: makes /app/config opaque (.wh..wh..opq) holding only c.conf)"

say "2. Import it: each layer is verified (digest, diff ID) and committed under its OCI chain ID"
printf '%s$ top=$(strata import-image image:demo)%s\n' "$D" "$N"
top=$("$STRATA" import-image image:demo)
echo "$top"

say "3. What the store holds"
strata tree
strata layers "$top"

say "4. Explain the union without mounting it"
strata which "$top" /etc/motd
strata which "$top" /var/cache/big || note "(exit status $?: not in the union)"
strata which "$top" /app/config/a.conf || note "(exit status $?: hidden by the top layer's opaque dir)"
strata files "$top" /app

say "5. A container: an active snapshot on the image, mounted"
strata prepare --label app=demo c1 "$top"
mkdir rootfs
strata mount c1 rootfs
run findmnt -n -o FSTYPE rootfs
run ls rootfs rootfs/app/config
run cat rootfs/etc/motd

say "6. Write in the container"
runsh 'echo "edited in the container" >> rootfs/etc/motd'
runsh 'echo "started" > rootfs/var/log.txt'
run rm rootfs/app/config/c.conf
strata diff --stat c1
strata which c1 /etc/motd

say "7. Unmount and commit the container's layer as an image layer"
strata umount rootfs
strata commit app-v1 c1
strata diff app-v1 -o app-v1.tar.gz --compression gzip
run tar -tzvf app-v1.tar.gz
strata ls
strata usage
strata info app-v1

say "8. Inspection changed nothing; check and gc keep the store honest"
strata check
strata gc

say "9. The plain-directory form: any dirs, no store"
mkdir -p plain/lower plain/upper plain/work plain/merged
echo "from a plain dir" >plain/lower/hello
strata mount -o lowerdir=plain/lower,upperdir=plain/upper,workdir=plain/work plain/merged
runsh "echo changed > $demo/plain/merged/hello"
run ls -l plain/upper
strata umount plain/merged

echo
note "Done: the store is in kernel overlayfs format; $demo is removed on exit."
