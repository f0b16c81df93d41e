#!/usr/bin/env bash
# pull_bench: digestd's verified pull against the practical limit and the peer, in one run.
#   big image:   one layer of random data (default 1 GiB, gzip), signed with digestctl sign
#   small image: many layers (default 200) of small files
# For each: digestd (pull_once: resolve, signature + policy, stream + hash + commit, diff_ids)
# into a fresh store; for the big layer `curl -o FILE` + sync (unverified: the practical limit);
# `skopeo copy docker://... oci:DIR` (the peer). Prints `bench <name> <value> <unit>` lines and
# `ratio pull_vs_curl`, `ratio pull_vs_skopeo_big`, `ratio pull_vs_skopeo_small` (>1: digestd is
# faster). Starts and stops its own registry on a free loopback port.
#
# As root, every tool writes into a fresh ext4 filesystem (a sparse image on a direct-io loop
# device under --dir): a long-lived filesystem remembers recently deleted inodes (ext4 skips
# inodes freed in the last 12 hours while their inode table block is cached, recently_deleted()),
# which taxes whichever tool creates the most files, here digestd's unpacked file objects. A
# dedicated cache volume is the realistic setting; --host-fs measures on the --dir filesystem.
#
# Usage: bench/pull_bench.sh [--build DIR] [--big-mib N] [--small-layers N] [--runs N] [--dir DIR]
#                            [--host-fs]
set -euo pipefail
BUILD=build/default
BIG_MIB=1024
SMALL_LAYERS=200
RUNS=3
BASE=/var/tmp
FRESH_FS=1
while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --small-layers) SMALL_LAYERS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --dir) BASE=$2; shift 2 ;;
    --host-fs) FRESH_FS=; shift ;;
    *) echo "usage: $0 [--build DIR] [--big-mib N] [--small-layers N] [--runs N] [--dir DIR] [--host-fs]" >&2; exit 2 ;;
  esac
done
cd "$(dirname "$0")/.."
case $BUILD in /*) ;; *) BUILD=$PWD/$BUILD ;; esac
PULL_ONCE=$BUILD/bench/pull_once
DIGESTCTL=$BUILD/tools/digestctl
. scripts/lib/registry.sh
WORK=$(mktemp -d "$BASE/pull_bench.XXXXXX")
OUT=$WORK  # where the measured runs write
LOOP=
cleanup() {
  stop_registry
  if [ -n "$LOOP" ]; then
    umount "$WORK/out" 2>/dev/null || true
    losetup -d "$LOOP" 2>/dev/null || true
  fi
  rm -rf "$WORK"
}
[ -n "${PULL_BENCH_KEEP:-}" ] || trap cleanup EXIT
cd "$WORK"
if [ -n "$FRESH_FS" ] && [ "$(id -u)" = 0 ]; then
  # Room for every run's output: per run 2x the big layer for digestd (blob + file), 1x each for
  # curl and skopeo, plus the small image.
  truncate -s "$(( (BIG_MIB * 4 * RUNS + 512 * RUNS + 2048) ))M" "$WORK/fs.img"
  mkdir "$WORK/out"
  if mkfs.ext4 -q -F "$WORK/fs.img" && LOOP=$(losetup --find --show --direct-io=on "$WORK/fs.img") &&
     mount "$LOOP" "$WORK/out"; then
    OUT=$WORK/out
    echo "pull_bench: runs write to a fresh ext4 filesystem on $LOOP" >&2
  else
    echo "pull_bench: no loop device here; runs write to $WORK's filesystem" >&2
  fi
fi

start_registry "$WORK"
HOST=$REGISTRY_HOST

# An OCI layout with the given gzip layer files, in order.
make_layout() {
  local dir=$1; shift
  mkdir -p "$dir/blobs/sha256"
  echo '{"imageLayoutVersion":"1.0.0"}' > "$dir/oci-layout"
  local layers="" diffs=""
  for l in "$@"; do
    local d s u
    d=$(sha256sum "$l" | cut -d' ' -f1); s=$(stat -c %s "$l")
    u=$(gzip -dc "$l" | sha256sum | cut -d' ' -f1)
    mv "$l" "$dir/blobs/sha256/$d"
    layers+="${layers:+,}{\"mediaType\":\"application/vnd.oci.image.layer.v1.tar+gzip\",\"digest\":\"sha256:$d\",\"size\":$s}"
    diffs+="${diffs:+,}\"sha256:$u\""
  done
  printf '{"architecture":"amd64","os":"linux","config":{},"rootfs":{"type":"layers","diff_ids":[%s]}}' "$diffs" > cfg
  local cd cs; cd=$(sha256sum cfg | cut -d' ' -f1); cs=$(stat -c %s cfg); mv cfg "$dir/blobs/sha256/$cd"
  printf '{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","digest":"sha256:%s","size":%s},"layers":[%s]}' "$cd" "$cs" "$layers" > man
  local md ms; md=$(sha256sum man | cut -d' ' -f1); ms=$(stat -c %s man); mv man "$dir/blobs/sha256/$md"
  printf '{"schemaVersion":2,"manifests":[{"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:%s","size":%s,"annotations":{"org.opencontainers.image.ref.name":"v1"}}]}' "$md" "$ms" > "$dir/index.json"
}

echo "pull_bench: building a ${BIG_MIB} MiB single-layer image and a ${SMALL_LAYERS}-layer image" >&2
# Nothing is deleted before the measured runs, here either: ext4 skips inodes freed in the last
# ~35 s when it allocates new ones (recently_deleted()), which taxes whichever tool creates the
# most files (digestd's file objects) for what the setup threw away. The inputs stay in $WORK.
mkdir -p big/root && head -c "$((BIG_MIB << 20))" /dev/urandom > big/root/data.bin
tar -C big/root -cf - data.bin | gzip -1 > big.tar.gz
make_layout big-oci big.tar.gz
mkdir -p small
for i in $(seq "$SMALL_LAYERS"); do
  mkdir -p small/r$i/etc/l$i
  for f in $(seq 20); do head -c $((RANDOM % 4096 + 100)) /dev/urandom > small/r$i/etc/l$i/f$f; done
  tar -C small/r$i -cf - etc | gzip -1 > small/l$i.tar.gz
done
layers=(); for i in $(seq "$SMALL_LAYERS"); do layers+=("small/l$i.tar.gz"); done
make_layout small-oci "${layers[@]}"
skopeo copy --quiet --dest-tls-verify=false oci:big-oci:v1 "docker://$HOST/bench/big:v1"
skopeo copy --quiet --dest-tls-verify=false oci:small-oci:v1 "docker://$HOST/bench/small:v1"

# Both images signed; the policy requires it, so the measured pull is the verified one.
openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out sign.pem 2>/dev/null
openssl pkey -in sign.pem -pubout -out sign.pub
"$DIGESTCTL" sign --insecure --key sign.pem "$HOST/bench/big:v1" >/dev/null
"$DIGESTCTL" sign --insecure --key sign.pem "$HOST/bench/small:v1" >/dev/null
printf '{"default":[{"type":"sigstoreSigned","keyPath":"%s","signedIdentity":{"type":"matchRepository"}}]}' \
  "$WORK/sign.pub" > policy.json
BIG_LAYER=$(skopeo inspect --raw --tls-verify=false "docker://$HOST/bench/big:v1" | jq -r '.layers[0].digest')
BIG_BYTES=$(skopeo inspect --raw --tls-verify=false "docker://$HOST/bench/big:v1" | jq -r '.layers[0].size')

now() { date +%s.%N; }
# CPU seconds the registry has used so far (it shares the machine's cores with the tools).
reg_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$REGISTRY_PID/stat"; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
d_big=(); d_rss=(); c_big=(); s_big=(); d_small=(); s_small=(); r_dsmall=(); r_ssmall=()
# Every run of every tool writes into its own new directory, and nothing is deleted until the
# end: ext4's inode allocator skips inodes freed in the last seconds (recently_deleted() in
# perf), so deleting the previous run's output right before a run taxes whichever tool creates
# the most files (digestd's unpacked file objects: 4000 for the small image).
for run in $(seq "$RUNS"); do
  sync
  out=$("$PULL_ONCE" --store "$OUT/d-big-$run" --policy policy.json --insecure "$HOST" "$HOST/bench/big:v1" 2>/dev/null)
  d_big+=("$(echo "$out" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')")
  d_rss+=("$(echo "$out" | sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p')")
  sync
  t0=$(now); curl -sf -o "$OUT/c-big-$run.blob" "http://$HOST/v2/bench/big/blobs/$BIG_LAYER"; sync; t1=$(now)
  c_big+=("$(echo "$t1 - $t0" | bc -l)")
  t0=$(now); skopeo copy --quiet --src-tls-verify=false "docker://$HOST/bench/big:v1" "oci:$OUT/s-big-$run:v1"; sync; t1=$(now)
  s_big+=("$(echo "$t1 - $t0" | bc -l)")
  r0=$(reg_cpu)
  out=$("$PULL_ONCE" --store "$OUT/d-small-$run" --policy policy.json --insecure "$HOST" "$HOST/bench/small:v1" 2>/dev/null)
  r_dsmall+=("$(echo "$(reg_cpu) - $r0" | bc -l)")
  d_small+=("$(echo "$out" | sed -n 's/.*seconds=\([0-9.]*\).*/\1/p')")
  sync
  r0=$(reg_cpu)
  t0=$(now); skopeo copy --quiet --src-tls-verify=false "docker://$HOST/bench/small:v1" "oci:$OUT/s-small-$run:v1"; sync; t1=$(now)
  r_ssmall+=("$(echo "$(reg_cpu) - $r0" | bc -l)")
  s_small+=("$(echo "$t1 - $t0" | bc -l)")
  echo "run $run: digestd big ${d_big[-1]}s (rss ${d_rss[-1]} KiB), curl+sync ${c_big[-1]}s, skopeo big ${s_big[-1]}s, digestd small ${d_small[-1]}s, skopeo small ${s_small[-1]}s" >&2
done
DB=$(printf '%s\n' "${d_big[@]}" | median); CB=$(printf '%s\n' "${c_big[@]}" | median)
SB=$(printf '%s\n' "${s_big[@]}" | median); DS=$(printf '%s\n' "${d_small[@]}" | median)
SS=$(printf '%s\n' "${s_small[@]}" | median); RSS=$(printf '%s\n' "${d_rss[@]}" | sort -g | tail -n 1)
mbs() { echo "scale=1; $BIG_BYTES / 1000000 / $1" | bc -l; }
echo "bench pull_big_digestd $(mbs "$DB") MB/s"
echo "bench pull_big_digestd_seconds $DB s"
echo "bench pull_big_curl_sync $(mbs "$CB") MB/s"
echo "bench pull_big_skopeo $(mbs "$SB") MB/s"
echo "bench pull_big_layer_bytes $BIG_BYTES bytes"
echo "bench pull_small_digestd_seconds $DS s"
echo "bench pull_small_skopeo_seconds $SS s"
echo "bench pull_small_layers $SMALL_LAYERS layers"
# The registry's own CPU while serving each small pull: with both on the same cores, no client
# can finish in less than this divided by the number of cores.
echo "bench pull_small_registry_cpu_digestd $(printf '%s\n' "${r_dsmall[@]}" | median) s"
echo "bench pull_small_registry_cpu_skopeo $(printf '%s\n' "${r_ssmall[@]}" | median) s"
echo "bench pull_digestd_peak_rss $(echo "scale=1; $RSS / 1024" | bc -l) MiB"
echo "ratio pull_vs_curl $(echo "scale=3; $CB / $DB" | bc -l)"
echo "ratio pull_vs_skopeo_big $(echo "scale=3; $SB / $DB" | bc -l)"
echo "ratio pull_vs_skopeo_small $(echo "scale=3; $SS / $DS" | bc -l)"
