#!/usr/bin/env bash
# digestd demo, end to end on real parts (run as root: it mounts FUSE and overlayfs):
#   1. installs what is missing and builds
#   2. a local docker-registry with a busybox image built with umoci, pushed with skopeo and
#      signed with `digestctl sign`; a policy that requires that signature
#   3. digestd started on a default config; `digestctl pull` (signature and policy before any
#      layer, every blob and diff_id verified, layers unpacked, committed) with live progress
#   4. a command run from the mounted image: overlayfs over the mount's layer views, chroot
#   5. refusals with clear errors: an unsigned image, a tag moved to an unsigned image, a denied
#      digest vanishing from the mount
#   6. digestd stopped with SIGTERM (unmounts), a short store benchmark
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j2

BUILD=$PWD/build/default
CTL="$BUILD/tools/digestctl"
. scripts/lib/registry.sh
WORK=$(mktemp -d /var/tmp/digestd-demo.XXXXXX)
DAEMON_PID=
cleanup() {
  [ -n "$DAEMON_PID" ] && kill "$DAEMON_PID" 2>/dev/null && wait "$DAEMON_PID" 2>/dev/null || true
  umount -l "$WORK/mnt" 2>/dev/null || true
  stop_registry
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

say "2. a local registry with a signed busybox image"
cd "$WORK"
start_registry "$WORK"
HOST=$REGISTRY_HOST
umoci init --layout img >/dev/null
for tag in signed unsigned; do
  umoci new --image img:$tag >/dev/null
  umoci unpack --rootless --image img:$tag b-$tag >/dev/null
  mkdir -p b-$tag/rootfs/bin && cp /bin/busybox b-$tag/rootfs/bin/busybox
  echo "hello from a verified image ($tag)" > b-$tag/rootfs/hello.txt
  umoci repack --image img:$tag b-$tag >/dev/null
done
skopeo copy --quiet --dest-tls-verify=false oci:img:signed "docker://$HOST/demo/busybox:v1"
skopeo copy --quiet --dest-tls-verify=false oci:img:unsigned "docker://$HOST/demo/unsigned:v1"
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out signer.pem 2>/dev/null
openssl pkey -in signer.pem -pubout -out signer.pub
"$CTL" sign --insecure --key signer.pem "$HOST/demo/busybox:v1"
cat > trust.json <<JSON
{"keys":[{"id":"demo-signer","pemPath":"$WORK/signer.pub","start":"2026-01-01T00:00:00Z","scopes":["$HOST/demo"]}]}
JSON
cat > policy.json <<JSON
{"default":[{"type":"reject"}],
 "transports":{"docker":{"$HOST/demo":[{"type":"sigstoreSigned","keyPath":"$WORK/signer.pub",
   "signedIdentity":{"type":"matchRepository"}}]}}}
JSON

say "3. digestd on a default config"
cat > digestd.toml <<TOML
[store]
root = "$WORK/store"
[policy]
file = "$WORK/policy.json"
trust = "$WORK/trust.json"
[daemon]
socket = "$WORK/digestd.sock"
mountpoint = "$WORK/mnt"
[[registry]]
host = "$HOST"
insecure = true     # a loopback demo registry
TOML
"$BUILD/daemon/digestd" --config digestd.toml 2> digestd.log &
DAEMON_PID=$!
for _ in $(seq 200); do "$CTL" --socket digestd.sock health >/dev/null 2>&1 && break; sleep 0.05; done
"$CTL" --socket digestd.sock health
ctl() { "$CTL" --socket "$WORK/digestd.sock" "$@"; }

say "   pull: signature and policy first, then every blob and diff_id verified, layers unpacked"
# Progress goes to stderr: a live bar on a terminal, plain event lines otherwise.
ctl pull "$HOST/demo/busybox:v1" > pull.out
cat pull.out
IMAGE=$(grep '^image ' pull.out | awk '{print $2}' | cut -d: -f2)
ctl images
ctl inspect "$HOST/demo/busybox:v1"

say "4. run a command from the mounted image (overlayfs over the mount's layer views)"
LOWER=$(cat "$WORK/mnt/images/sha256/$IMAGE/lowerdir")
echo "lowerdir=$LOWER"
unshare -m --propagation private sh -c "
  mkdir -p $WORK/ovl && mount -t tmpfs tmpfs $WORK/ovl && mkdir $WORK/ovl/u $WORK/ovl/w $WORK/ovl/root &&
  mount -t overlay overlay -o lowerdir=$LOWER,upperdir=$WORK/ovl/u,workdir=$WORK/ovl/w $WORK/ovl/root &&
  chroot $WORK/ovl/root /bin/busybox sh -c '/bin/busybox cat /hello.txt; echo running: \$(/bin/busybox uname -s) busybox from digestd'"

say "5. refused: an unsigned image"
ctl pull "$HOST/demo/unsigned:v1" 2>&1 | tail -n 2 | cut -c1-300 || true

say "   refused: the signed tag moved to another (unsigned) image"
skopeo copy --quiet --dest-tls-verify=false oci:img:unsigned "docker://$HOST/demo/busybox:v1"
ctl pull "$HOST/demo/busybox:v1" 2>&1 | tail -n 2 | cut -c1-300 || true

say "   denied: a digest on the deny list vanishes from the mount"
ls "$WORK/mnt/images/sha256/"
ctl deny add "sha256:$IMAGE" --reason "demo: pulled from circulation"

if ls "$WORK/mnt/images/sha256/" | grep -q "$IMAGE"; then echo "still listed"; exit 1; else echo "(gone from the mount)"; fi
# The audit log for people: its header and the last four events (`ctl audit --json` for scripts).
ctl audit | awk 'NR == 1 { print; next } { l[NR] = $0 } END { for (i = NR - 3; i <= NR; i++) if (i > 1) print l[i] }' | cut -c1-200

say "6. stop digestd (SIGTERM unmounts)"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID" || true; DAEMON_PID=
if grep -q " $WORK/mnt " /proc/self/mountinfo; then echo "still mounted"; exit 1; else echo "(unmounted)"; fi
"$CTL" fsck --root "$WORK/store" 2>/dev/null | tail -n 1

say "   store_bench (256 MiB; docs/PERFORMANCE.md has the full-size figures)"
"$BUILD/bench/store_bench" --size 256MiB --runs 3 --dir "$WORK" 2>/dev/null
echo
echo "demo finished"
