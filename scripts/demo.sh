#!/usr/bin/env bash
# digestd demo: what is built so far, end to end, on real parts.
#   1. installs what is missing and builds
#   2. the crash-safe store: a writer SIGKILLed mid-stream, then `digestctl fsck`
#   3. the verified pull: a local docker-registry, a busybox image built with umoci and pushed with
#      skopeo, signed with `digestctl sign`; a policy that requires that signature; the pull
#      (signature and policy before any layer, every blob and diff_id verified, committed)
#   4. refusals with clear errors: an unsigned image, and a tag moved to an unsigned image
#   5. a short store benchmark
# The FUSE mount, the daemon and running a command from the mounted image come with the next
# issues (see `issues`); this script grows with them.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/install-deps.sh
cmake --preset default >/dev/null
cmake --build --preset default -j2

BUILD=$PWD/build/default
. scripts/lib/registry.sh
WORK=$(mktemp -d /var/tmp/digestd-demo.XXXXXX)
cleanup() {
  stop_registry
  rm -rf "$WORK"
}
trap cleanup EXIT
say() { printf '\n== %s\n' "$*"; }

say "2. ingest blobs, then SIGKILL the writer mid-stream"
"$BUILD/tests/integration/store_crash_child" "$WORK/crash-store" 42 > "$WORK/committed" 2>/dev/null &
CHILD=$!
sleep 1.5
kill -KILL "$CHILD"
{ wait "$CHILD"; } 2>/dev/null || true
echo "writer killed after $(grep -c '^C ' "$WORK/committed") commits"
"$BUILD/tools/digestctl" fsck --root "$WORK/crash-store" 2>/dev/null

say "3. a local registry with a signed busybox image"
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
"$BUILD/tools/digestctl" sign --insecure --key signer.pem "$HOST/demo/busybox:v1"
cat > trust.json <<JSON
{"keys":[{"id":"demo-signer","pemPath":"signer.pub","start":"2026-01-01T00:00:00Z","scopes":["$HOST/demo"]}]}
JSON
cat > policy.json <<JSON
{"default":[{"type":"reject"}],
 "transports":{"docker":{"$HOST/demo":[{"type":"sigstoreSigned","keyPath":"signer.pub",
   "signedIdentity":{"type":"matchRepository"}}]}}}
JSON
"$BUILD/tools/digestctl" policy eval --policy policy.json --trust trust.json "$HOST/demo/busybox:v1" || true

say "   pull it: signature and policy first, then every blob and diff_id verified"
PULL_ONCE_TRACE=1 "$BUILD/bench/pull_once" --store "$WORK/store" --policy policy.json \
  --insecure "$HOST" "$HOST/demo/busybox:v1" 2> pull.log || { cat pull.log; exit 1; }
grep -E '^ +[0-9.]+ (resolving|resolved|policy|committed)' pull.log
"$BUILD/tools/digestctl" fsck --root "$WORK/store" 2>/dev/null | tail -n 1

say "4. refused: an unsigned image"
if "$BUILD/bench/pull_once" --store "$WORK/store" --policy policy.json --insecure "$HOST" \
     "$HOST/demo/unsigned:v1" 2> refused.log; then
  echo "unexpectedly allowed"; exit 1
fi
grep -o 'pull_once: .*' refused.log | cut -c1-300

say "   refused: the signed tag moved to another (unsigned) image"
skopeo copy --quiet --dest-tls-verify=false oci:img:unsigned "docker://$HOST/demo/busybox:v1"
if "$BUILD/bench/pull_once" --store "$WORK/store2" --policy policy.json --insecure "$HOST" \
     "$HOST/demo/busybox:v1" 2> moved.log; then
  echo "unexpectedly allowed"; exit 1
fi
grep -o 'pull_once: .*' moved.log | cut -c1-300

say "5. store_bench (256 MiB; docs/PERFORMANCE.md has the full-size figures)"
"$BUILD/bench/store_bench" --size 256MiB --runs 3 --dir "$WORK" 2>/dev/null
echo
echo "demo finished"
