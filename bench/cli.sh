#!/usr/bin/env bash
# bench/cli.sh: time strata's inspection commands and layer import against
# containerd's overlayfs snapshotter driven by ctr, on the same machine in
# the same run. Needs root, a built bin/strata (make build) and containerd
# + ctr (apt-get install containerd); a private containerd is started on a
# temp root and socket and stopped at the end. Not a test: it prints
# figures.
#
#   N=1000 LAYER_MB=200 REPS=5 bash bench/cli.sh
set -euo pipefail

STRATA=$(realpath "${STRATA:-bin/strata}")
N=${N:-1000}           # snapshots per store: N/10 chains of 9 committed + 1 active
LAYER_MB=${LAYER_MB:-200}
REPS=${REPS:-5}
[[ $EUID -eq 0 ]] || { echo "bench/cli.sh: needs root" >&2; exit 1; }
command -v containerd >/dev/null && command -v ctr >/dev/null || { echo "bench/cli.sh: apt-get install containerd" >&2; exit 1; }

work=$(mktemp -d /var/tmp/strata-bench.XXXXXX) # on disk, not tmpfs
CTRD=
cleanup() {
	[[ -n $CTRD ]] && kill "$CTRD" 2>/dev/null && wait "$CTRD" 2>/dev/null || true
	grep -o " $work[^ ]*" /proc/self/mountinfo | sort -r | xargs -r -n1 umount -l 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT

export STRATA_ROOT=$work/strata
SOCK=$work/containerd.sock
cat >"$work/config.toml" <<TOML
version = 2
root = "$work/containerd/root"
state = "$work/containerd/state"
[grpc]
  address = "$SOCK"
[plugins."io.containerd.grpc.v1.cri"]
  disable = true
TOML
containerd --config "$work/config.toml" >"$work/containerd.log" 2>&1 &
CTRD=$!
for _ in $(seq 50); do [[ -S $SOCK ]] && break; sleep 0.1; done
CTR=(ctr --address "$SOCK" --namespace bench)
CTRS=("${CTR[@]}" snapshots --snapshotter overlayfs)

# best TIME of REPS runs of a command, in ms
best() {
	local b=999999999 t0 t1 ms
	for _ in $(seq "$REPS"); do
		t0=$(date +%s%N)
		"$@" >/dev/null
		t1=$(date +%s%N)
		ms=$(((t1 - t0) / 1000000))
		((ms < b)) && b=$ms
	done
	echo "$b"
}

# upper dir of an active snapshot from a mount(8) line
upper_of() { grep -o 'upperdir=[^, ]*' | head -1 | cut -d= -f2 || true; }
bind_of() { grep -oE '(/[^ ]*/fs)' | head -1; }

echo "== populating $N snapshots in each store (4 KiB file per layer)"
t0=$(date +%s)
for ((c = 1; c <= N / 10; c++)); do
	parent=
	for ((d = 1; d <= 10; d++)); do
		key=a-$c-$d
		line=$("$STRATA" prepare "$key" $parent)
		dir=$(echo "$line" | upper_of)
		[[ -n $dir ]] || dir=$(echo "$line" | bind_of)
		head -c 4096 /dev/urandom >"$dir/f-$c-$d"
		if ((d < 10)); then "$STRATA" commit "c-$c-$d" "$key" >/dev/null; parent=c-$c-$d; fi
	done
done
t1=$(date +%s)
for ((c = 1; c <= N / 10; c++)); do
	parent=
	for ((d = 1; d <= 10; d++)); do
		key=a-$c-$d
		"${CTRS[@]}" prepare "$key" $parent >/dev/null
		line=$("${CTRS[@]}" mounts /mnt "$key")
		dir=$(echo "$line" | upper_of)
		[[ -n $dir ]] || dir=$(echo "$line" | grep -oE '/[^ ]*/fs' | head -1)
		head -c 4096 /dev/urandom >"$dir/f-$c-$d"
		if ((d < 10)); then "${CTRS[@]}" commit "c-$c-$d" "$key" >/dev/null; parent=c-$c-$d; fi
	done
done
t2=$(date +%s)
echo "populate: strata $((t1 - t0)) s, ctr $((t2 - t1)) s (one process per prepare/commit)"
echo "strata: $("$STRATA" ls | tail -n +2 | wc -l) snapshots; containerd: $("${CTRS[@]}" ls | tail -n +2 | wc -l)"

echo
echo "== inspection, best of $REPS (ms, whole process)"
printf '%-28s %8s   %-34s %8s\n' "strata" "ms" "containerd" "ms"
printf '%-28s %8s   %-34s %8s\n' "strata ls" "$(best "$STRATA" ls)" "ctr snapshots ls" "$(best "${CTRS[@]}" ls)"
printf '%-28s %8s   %-34s %8s\n' "strata ls --format json" "$(best "$STRATA" ls --format json)" "" ""
printf '%-28s %8s   %-34s %8s\n' "strata tree" "$(best "$STRATA" tree)" "ctr snapshots tree" "$(best "${CTRS[@]}" tree)"
printf '%-28s %8s   %-34s %8s\n' "strata usage" "$(best "$STRATA" usage)" "ctr snapshots usage" "$(best "${CTRS[@]}" usage)"
printf '%-28s %8s   %-34s %8s\n' "strata usage a-1-10" "$(best "$STRATA" usage a-1-10)" "ctr snapshots usage a-1-10" "$(best "${CTRS[@]}" usage a-1-10)"
croot=$work/containerd/root/io.containerd.snapshotter.v1.overlayfs/snapshots
printf '%-28s %8s   %-34s %8s\n' "du -s strata snapshots/" "$(best du -s "$STRATA_ROOT/snapshots")" "du -s containerd snapshots/" "$(best du -s "$croot")"
echo "totals: strata usage $("$STRATA" usage | tail -1 | awk '{print $2, $3}'), du -s $(du -sk "$STRATA_ROOT/snapshots" | cut -f1) KiB; containerd du -s $(du -sk "$croot" | cut -f1) KiB"

echo
echo "== import of a ${LAYER_MB} MB layer (uncompressed tar, ${LAYER_MB} files of 1 MiB random data)"
mkdir -p "$work/src/data"
for ((i = 0; i < LAYER_MB; i++)); do head -c 1048576 /dev/urandom >"$work/src/data/f$i"; done
tar -C "$work/src" -cf "$work/layer.tar" data
rm -rf "$work/src"
# The same layer as a one-layer OCI image, for ctr images import.
python3 - "$work" <<'PY'
import hashlib, json, os, sys
work = sys.argv[1]
lay = os.path.join(work, "oci"); blobs = os.path.join(lay, "blobs", "sha256"); os.makedirs(blobs)
h = hashlib.sha256(); n = 0
with open(os.path.join(work, "layer.tar"), "rb") as f:
    for b in iter(lambda: f.read(1 << 20), b""): h.update(b); n += len(b)
d = h.hexdigest(); os.link(os.path.join(work, "layer.tar"), os.path.join(blobs, d))
def put(obj):
    b = json.dumps(obj).encode(); x = hashlib.sha256(b).hexdigest()
    open(os.path.join(blobs, x), "wb").write(b); return "sha256:" + x, len(b)
cfg = put({"architecture": "amd64", "os": "linux", "rootfs": {"type": "layers", "diff_ids": ["sha256:" + d]}})
man = put({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
  "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg[0], "size": cfg[1]},
  "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": "sha256:" + d, "size": n}]})
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
  "digest": man[0], "size": man[1], "annotations": {"org.opencontainers.image.ref.name": "bench:1"}}]},
  open(os.path.join(lay, "index.json"), "w"))
open(os.path.join(lay, "oci-layout"), "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
tar -C "$work/oci" -cf "$work/image.tar" .
sync
ms() { local t0 t1; t0=$(date +%s%N); "$@" >/dev/null 2>&1; t1=$(date +%s%N); echo $(((t1 - t0) / 1000000)); }
echo 3 >/proc/sys/vm/drop_caches
a=$(ms "$STRATA" import "$work/layer.tar")
"$STRATA" rm "$("$STRATA" import "$work/layer.tar" 2>/dev/null)" >/dev/null # already there: prints its chain ID
echo 3 >/proc/sys/vm/drop_caches
b=$(ms "$STRATA" import-image "$work/oci")
echo 3 >/proc/sys/vm/drop_caches
c=$(ms "${CTR[@]}" images import --snapshotter overlayfs "$work/image.tar")
printf 'strata import layer.tar           %6d ms  (%d MB/s)\n' "$a" $((LAYER_MB * 1000 / (a + 1)))
printf 'strata import-image (verifies)    %6d ms  (%d MB/s)\n' "$b" $((LAYER_MB * 1000 / (b + 1)))
printf 'ctr images import (+unpack)       %6d ms  (%d MB/s; copies into the content store, then unpacks)\n' "$c" $((LAYER_MB * 1000 / (c + 1)))
echo
echo "machine: $(nproc) cores, $(uname -r), $(findmnt -n -o FSTYPE -T "$work") at $work; containerd $(containerd --version | awk '{print $3}')"
