#!/usr/bin/env bash
# pull_bench: digestd's verified pull against the practical limit and the peers, in one run.
#   big image:   one layer of random data (default 1 GiB, gzip), signed with digestctl sign
#   small image: many layers (default 200) of small files
# For each image, every tool is timed the same way, from outside: exec to exit, then `sync`,
# into a new directory of its own:
#   - digestd: pull_once (config and policy load, store open, resolve, signature + policy,
#     stream + hash + diff_ids + unpack + durable commit, store close); its in-process figure
#     (from its own start to the commit) is printed apart as *_inprocess_seconds;
#   - containerd 1.6: `ctr image pull` (fetch, then unpack into its overlayfs snapshotter) against
#     a containerd of its own (own root, state and socket, CRI disabled) started for each run;
#   - podman: `podman pull` (own --root/--runroot, overlay), when podman is installed;
#   - skopeo copy docker://... oci:DIR (fetches and writes blobs, unpacks nothing), and for the
#     big layer `curl -o FILE` (verifies nothing): the practical limit.
# Also the CPU seconds each client used for the same pull (digestd: pull_once; containerd: the
# daemon plus ctr) and the registry's CPU while it served each pull. Prints `bench <name> <value>
# <unit>` lines and `ratio pull_vs_<peer>_<image>` (>1: digestd is faster). Starts and stops its
# own registry and containerds on free loopback ports and private sockets.
#
# As root, every tool writes into a fresh ext4 filesystem (a sparse image on a direct-io loop
# device under --dir): a long-lived filesystem remembers recently deleted inodes (ext4 skips
# inodes freed in the last 12 hours while their inode table block is cached, recently_deleted()),
# which taxes whichever tool creates the most files, here digestd's unpacked file objects. A
# dedicated cache volume is the realistic setting; --host-fs measures on the --dir filesystem.
#
# Usage: bench/pull_bench.sh [--build DIR] [--big-mib N] [--small-layers N] [--runs N] [--dir DIR]
#                            [--host-fs] [--no-containerd]
set -euo pipefail
BUILD=build/default
BIG_MIB=1024
SMALL_LAYERS=200
RUNS=3
BASE=/var/tmp
FRESH_FS=1
CONTAINERD=1
while [ $# -gt 0 ]; do
  case $1 in
    --build) BUILD=$2; shift 2 ;;
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --small-layers) SMALL_LAYERS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --dir) BASE=$2; shift 2 ;;
    --host-fs) FRESH_FS=; shift ;;
    --no-containerd) CONTAINERD=; shift ;;
    *) echo "usage: $0 [--build DIR] [--big-mib N] [--small-layers N] [--runs N] [--dir DIR] [--host-fs] [--no-containerd]" >&2; exit 2 ;;
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
CTD_PID=
stop_containerd() {
  if [ -n "$CTD_PID" ]; then
    kill "$CTD_PID" 2>/dev/null || true
    wait "$CTD_PID" 2>/dev/null || true
    CTD_PID=
  fi
}
cleanup() {
  stop_containerd
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
  # containerd and podman keep the blob and its unpacked copy too.
  truncate -s "$(( (BIG_MIB * 8 * RUNS + 1024 * RUNS + 2048) ))M" "$WORK/fs.img"
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
proc_cpu() { awk -v hz="$(getconf CLK_TCK)" '{ printf "%.3f\n", ($14 + $15) / hz }' "/proc/$1/stat"; }
reg_cpu() { proc_cpu "$REGISTRY_PID"; }
# CPU seconds of this shell's waited-for children so far (bash's `times`, second line). `times`
# must run in this shell, not in a pipeline or $(...): a forked subshell has no children yet.
child_cpu() {
  times > "$WORK/times.txt"
  tail -n 1 "$WORK/times.txt" |
    awk '{ n = 0; for (i = 1; i <= 2; i++) { split($i, p, /[ms]/); n += p[1] * 60 + p[2] } printf "%.3f\n", n }'
}
sub() { echo "$1 - $2" | bc -l; }
median() { sort -g | awk '{ v[NR] = $1 } END { print v[int((NR + 1) / 2)] }'; }
if [ -n "$CONTAINERD" ] && ! command -v containerd >/dev/null; then
  echo "pull_bench: containerd not installed: ctr figures skipped" >&2; CONTAINERD=
fi
PODMAN=; command -v podman >/dev/null && PODMAN=1
[ -n "$PODMAN" ] || echo "pull_bench: podman not installed: podman figures skipped" >&2

# A containerd of its own for one run: root on the measured filesystem, CRI off.
start_containerd() {
  local dir=$1 root=$2
  mkdir -p "$dir" "$root"
  cat > "$dir/config.toml" <<TOML
version = 2
root = "$root"
state = "$dir/state"
disabled_plugins = ["io.containerd.grpc.v1.cri"]
[grpc]
  address = "$dir/containerd.sock"
[ttrpc]
  address = "$dir/containerd.sock.ttrpc"
[plugins."io.containerd.internal.v1.opt"]
  path = "$dir/opt"
TOML
  containerd --config "$dir/config.toml" > "$dir/containerd.log" 2>&1 &
  CTD_PID=$!
  for _ in $(seq 500); do
    ctr -a "$dir/containerd.sock" version >/dev/null 2>&1 && return 0
    kill -0 "$CTD_PID" 2>/dev/null || break
    sleep 0.02
  done
  cat "$dir/containerd.log" >&2; echo "pull_bench: containerd did not start" >&2; return 1
}

declare -A T CPU REG  # "<tool>_<image>" -> per-run figures, space-separated
add() { T[$1]+=" $2"; CPU[$1]+=" $3"; REG[$1]+=" $4"; }
d_rss=(); d_big_in=(); d_small_in=()
# Runs `"$@"` as one measured pull of <tool>_<image>: sync first, then exec to exit plus sync;
# the CPU is the children's (plus `extra_cpu` of a daemon, set by the caller).
measure() {
  local key=$1; shift
  sync
  local r0 c0 t0 t1 c1 r1
  r0=$(reg_cpu); child_cpu > "$WORK/c0"; t0=$(now)
  "$@" > "$WORK/last.out" 2>"$WORK/last.err" || { cat "$WORK/last.err" >&2; echo "pull_bench: $key failed" >&2; exit 1; }
  sync; t1=$(now); child_cpu > "$WORK/c1"; r1=$(reg_cpu)
  add "$key" "$(sub "$t1" "$t0")" "$(sub "$(cat "$WORK/c1")" "$(cat "$WORK/c0")")" "$(sub "$r1" "$r0")"
}
# Every run of every tool writes into its own new directory, and nothing is deleted until the
# end: ext4's inode allocator skips inodes freed in the last seconds (recently_deleted() in
# perf), so deleting the previous run's output right before a run taxes whichever tool creates
# the most files (digestd's unpacked file objects: 4000 for the small image).
for run in $(seq "$RUNS"); do
  for img in big small; do
    measure "digestd_$img" "$PULL_ONCE" --store "$OUT/d-$img-$run" --policy policy.json --insecure "$HOST" "$HOST/bench/$img:v1"
    in=$(sed -n 's/.*seconds=\([0-9.]*\).*/\1/p' "$WORK/last.out")
    if [ "$img" = big ]; then d_big_in+=("$in"); else d_small_in+=("$in"); fi
    d_rss+=("$(sed -n 's/.*maxrss_kb=\([0-9]*\).*/\1/p' "$WORK/last.out")")
    if [ -n "$CONTAINERD" ]; then
      start_containerd "$WORK/ctd-$img-$run" "$OUT/ctd-$img-$run"
      k0=$(proc_cpu "$CTD_PID")
      measure "ctr_$img" ctr -a "$WORK/ctd-$img-$run/containerd.sock" -n bench image pull --plain-http "$HOST/bench/$img:v1"
      k1=$(proc_cpu "$CTD_PID")
      CPU[ctr_$img]="${CPU[ctr_$img]% *} $(echo "${CPU[ctr_$img]##* } + $k1 - $k0" | bc -l)"  # + the daemon's
      stop_containerd
    fi
    if [ -n "$PODMAN" ]; then
      measure "podman_$img" podman --root "$OUT/p-$img-$run" --runroot "$WORK/prun-$img-$run" \
        --storage-driver overlay pull --quiet --tls-verify=false "$HOST/bench/$img:v1"
    fi
    measure "skopeo_$img" skopeo copy --quiet --src-tls-verify=false "docker://$HOST/bench/$img:v1" "oci:$OUT/s-$img-$run:v1"
  done
  measure curl_big curl -sf -o "$OUT/c-big-$run.blob" "http://$HOST/v2/bench/big/blobs/$BIG_LAYER"
  line="run $run:"
  for k in "${!T[@]}"; do line+=" $k ${T[$k]##* }s"; done
  echo "$line" >&2
done
med() { printf '%s\n' $1 | median; }
RSS=$(printf '%s\n' "${d_rss[@]}" | sort -g | tail -n 1)
mbs() { echo "scale=1; $BIG_BYTES / 1000000 / $1" | bc -l; }
DB=$(med "${T[digestd_big]}"); DS=$(med "${T[digestd_small]}")
echo "bench pull_big_digestd $(mbs "$DB") MB/s"
echo "bench pull_big_digestd_seconds $DB s"
echo "bench pull_big_digestd_inprocess_seconds $(printf '%s\n' "${d_big_in[@]}" | median) s"
echo "bench pull_small_digestd_seconds $DS s"
echo "bench pull_small_digestd_inprocess_seconds $(printf '%s\n' "${d_small_in[@]}" | median) s"
echo "bench pull_big_layer_bytes $BIG_BYTES bytes"
echo "bench pull_small_layers $SMALL_LAYERS layers"
for k in $(printf '%s\n' "${!T[@]}" | sort); do
  tool=${k%_*}; img=${k##*_}
  [ "$tool" = digestd ] || echo "bench pull_${img}_${tool}_seconds $(med "${T[$k]}") s"
  echo "bench pull_cpu_${tool}_${img}_seconds $(med "${CPU[$k]}") s"
  # The registry's own CPU while serving the pull: with both on the same cores, no client can
  # finish in less than this divided by the number of cores.
  echo "bench pull_registry_cpu_${tool}_${img}_seconds $(med "${REG[$k]}") s"
done
[ -n "${T[curl_big]:-}" ] && echo "bench pull_big_curl_sync $(mbs "$(med "${T[curl_big]}")") MB/s"
echo "bench pull_digestd_peak_rss $(echo "scale=1; $RSS / 1024" | bc -l) MiB"
ratio() {  # ratio <name> <peer key> <digestd seconds>
  [ -n "${T[$2]:-}" ] && echo "ratio $1 $(echo "scale=3; $(med "${T[$2]}") / $3" | bc -l)"
  return 0
}
ratio pull_vs_curl curl_big "$DB"
ratio pull_vs_ctr_big ctr_big "$DB"
ratio pull_vs_ctr_small ctr_small "$DS"
ratio pull_vs_podman_big podman_big "$DB"
ratio pull_vs_podman_small podman_small "$DS"
ratio pull_vs_skopeo_big skopeo_big "$DB"
ratio pull_vs_skopeo_small skopeo_small "$DS"
if [ -n "${CPU[ctr_small]:-}" ]; then
  echo "ratio pull_cpu_vs_ctr_small $(echo "scale=3; $(med "${CPU[ctr_small]}") / $(med "${CPU[digestd_small]}")" | bc -l)"
  echo "ratio pull_cpu_vs_ctr_big $(echo "scale=3; $(med "${CPU[ctr_big]}") / $(med "${CPU[digestd_big]}")" | bc -l)"
fi
