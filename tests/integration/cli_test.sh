#!/usr/bin/env bash
# digestctl's offline verification commands, end to end, with exit codes:
#  - keys and signatures made by the real cosign (Debian trixie's cosign 2.x, fetched into .tools/
#    by scripts/install-deps.sh) and by openssl;
#  - verify-image and policy eval on a policy the test writes.
# Usage: cli_test.sh DIGESTCTL COSIGN
set -euo pipefail
DIGESTCTL=$1
COSIGN=$2
if [ ! -x "$COSIGN" ]; then
  echo "cli_test: cosign not found at $COSIGN (scripts/install-deps.sh fetches it)" >&2
  exit 1
fi
WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
cd "$WORK"
fails=0
pass=0
expect() {  # expect RC DESCRIPTION -- command...
  local want=$1 what=$2
  shift 3
  local got=0
  "$@" > out.txt 2>&1 || got=$?
  if [ "$got" -ne "$want" ]; then
    echo "FAIL: $what: exit $got, want $want"
    sed 's/^/    /' out.txt
    fails=$((fails + 1))
  else
    echo "ok: $what"
    pass=$((pass + 1))
  fi
}

export COSIGN_PASSWORD=""
mkdir a b
(cd a && "$COSIGN" generate-key-pair >/dev/null 2>&1)
(cd b && "$COSIGN" generate-key-pair >/dev/null 2>&1)
printf '{"critical":{"identity":{"docker-reference":"reg.test/app"},"image":{"docker-manifest-digest":"sha256:%s"},"type":"cosign container image signature"},"optional":null}' \
  "$(printf 'manifest' | sha256sum | cut -d' ' -f1)" > payload.json
"$COSIGN" sign-blob --key a/cosign.key --tlog-upload=false --output-signature sig.b64 --yes \
  payload.json >/dev/null 2>&1

expect 0 "cosign signature verifies" -- "$DIGESTCTL" verify-signature --key a/cosign.pub --payload payload.json --signature sig.b64
grep -q "Verified OK" out.txt || { echo "FAIL: no 'Verified OK'"; fails=$((fails + 1)); }
expect 1 "another cosign key is refused" -- "$DIGESTCTL" verify-signature --key b/cosign.pub --payload payload.json --signature sig.b64
sed 's/reg.test/reg.evil/' payload.json > tampered.json
expect 1 "tampered payload is refused" -- "$DIGESTCTL" verify-signature --key a/cosign.pub --payload tampered.json --signature sig.b64
printf ' ' >> tampered2.json; cat payload.json >> tampered2.json
expect 1 "one added space is refused" -- "$DIGESTCTL" verify-signature --key a/cosign.pub --payload tampered2.json --signature sig.b64
echo 'not base64!' > bad.sig
expect 2 "bad base64 is bad input" -- "$DIGESTCTL" verify-signature --key a/cosign.pub --payload payload.json --signature bad.sig
expect 2 "a private key is not a public key" -- "$DIGESTCTL" verify-signature --key a/cosign.key --payload payload.json --signature sig.b64
expect 2 "missing file is bad input" -- "$DIGESTCTL" verify-signature --key a/cosign.pub --payload nope --signature sig.b64

# Keys of every supported type made by openssl.
for spec in "ec:P-256:sha256" "ec:P-384:sha384" "rsa:3072:sha256" "ed25519::"; do
  IFS=: read -r kind param md <<<"$spec"
  case $kind in
    ec) openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:"$param" -out k.pem 2>/dev/null ;;
    rsa) openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:"$param" -out k.pem 2>/dev/null ;;
    ed25519) openssl genpkey -algorithm ED25519 -out k.pem 2>/dev/null ;;
  esac
  openssl pkey -in k.pem -pubout -out k.pub 2>/dev/null
  if [ "$kind" = ed25519 ]; then
    openssl pkeyutl -sign -rawin -inkey k.pem -in payload.json -out sig.bin
  else
    openssl dgst -"$md" -sign k.pem -out sig.bin payload.json
  fi
  base64 -w0 sig.bin > sig.txt
  expect 0 "openssl $kind $param signature verifies" -- "$DIGESTCTL" verify-signature --key k.pub --payload payload.json --signature sig.txt
  expect 1 "openssl $kind $param signature on other bytes fails" -- "$DIGESTCTL" verify-signature --key k.pub --payload tampered.json --signature sig.txt
done
openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:1024 -out weak.pem 2>/dev/null
openssl pkey -in weak.pem -pubout -out weak.pub 2>/dev/null
expect 2 "a 1024-bit RSA key is refused" -- "$DIGESTCTL" verify-signature --key weak.pub --payload payload.json --signature sig.txt

# verify-image: a cosign signature manifest laid out as fetched, judged by a policy.
printf 'manifest' > manifest.json
mkdir -p sig/blobs/sha256
phex=$(sha256sum payload.json | cut -d' ' -f1)
cp payload.json sig/blobs/sha256/$phex
cat > sig/sha256-x.sig.manifest.json <<JSON
{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json","config":{"mediaType":"application/vnd.oci.image.config.v1+json","size":2,"digest":"sha256:44136fa355b3678a1146ad16f7e8649e94fb4fc21fe77e8310c060f61caaff8a"},"layers":[{"mediaType":"application/vnd.dev.cosign.simplesigning.v1+json","size":$(stat -c %s payload.json),"digest":"sha256:$phex","annotations":{"dev.cosignproject.cosign/signature":"$(cat sig.b64)"}}]}
JSON
cat > policy.json <<JSON
{"default":[{"type":"reject"}],
 "transports":{"docker":{"reg.test":[{"type":"sigstoreSigned","keyIds":["team-a"],"signedIdentity":{"type":"matchRepository"}}]}}}
JSON
cat > trust.json <<JSON
{"keys":[{"id":"team-a","pemPath":"a/cosign.pub","start":"2026-01-01T00:00:00Z"}]}
JSON
expect 0 "signed image is allowed" -- "$DIGESTCTL" verify-image --trust trust.json --policy policy.json --manifest manifest.json --reference reg.test/app:v1 --time 2026-06-01T00:00:00Z sig
grep -q "signer=team-a" out.txt || { echo "FAIL: signer not named"; cat out.txt; fails=$((fails + 1)); }
expect 1 "before the key's window it is denied" -- "$DIGESTCTL" verify-image --trust trust.json --policy policy.json --manifest manifest.json --reference reg.test/app:v1 --time 2025-06-01T00:00:00Z sig
cat > revoked.json <<JSON
{"keys":[{"id":"team-a","pemPath":"a/cosign.pub","start":"2026-01-01T00:00:00Z"}],"revocations":[{"id":"team-a","reason":"leaked"}]}
JSON
expect 1 "a revoked key is denied" -- "$DIGESTCTL" verify-image --trust revoked.json --policy policy.json --manifest manifest.json --reference reg.test/app:v1 sig
grep -q 'key "team-a" is revoked: leaked' out.txt || { echo "FAIL: revocation not named"; cat out.txt; fails=$((fails + 1)); }
printf 'other manifest' > other.json
expect 1 "a signature for another manifest is denied" -- "$DIGESTCTL" verify-image --trust trust.json --policy policy.json --manifest other.json --reference reg.test/app:v1 sig
echo '{"default":[{"type":"reject"}],"unknown":1}' > bad-policy.json
expect 2 "a bad policy file is bad input" -- "$DIGESTCTL" verify-image --trust trust.json --policy bad-policy.json --manifest manifest.json --reference reg.test/app:v1 sig
grep -q 'bad-policy.json: top level: unknown field' out.txt || { echo "FAIL: field not named"; cat out.txt; fails=$((fails + 1)); }
expect 2 "a bad reference is bad input" -- "$DIGESTCTL" verify-image --trust trust.json --policy policy.json --manifest manifest.json --reference 'reg.test/App' sig

# policy eval
expect 0 "policy eval: signature required" -- "$DIGESTCTL" policy eval --policy policy.json reg.test/app:v1
grep -q "requirement=sigstoreSigned" out.txt || { echo "FAIL: rule not printed"; fails=$((fails + 1)); }
expect 1 "policy eval: default reject" -- "$DIGESTCTL" policy eval --policy policy.json quay.io/app:v1
expect 0 "policy eval --json" -- "$DIGESTCTL" --json policy eval --policy policy.json reg.test/app:v1
jq -e '.requirement == "sigstoreSigned"' out.txt >/dev/null || { echo "FAIL: json"; fails=$((fails + 1)); }
expect 2 "policy eval: bad reference" -- "$DIGESTCTL" policy eval --policy policy.json 'reg.test/UPPER/app'

echo "$pass passed, $fails failed"
[ "$fails" -eq 0 ]
