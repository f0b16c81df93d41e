#pragma once

// Reads signature evidence that was fetched from a registry into a directory (what
// `digestctl verify-image SIGDIR` takes). Recognised, in any combination:
//   *.manifest.json + blobs/<alg>/<hex> a cosign signature manifest (the sha256-<hex>.sig tag, e.g.
//                                       saved as sha256-<hex>.sig.manifest.json) or an OCI referrer
//                                       manifest, with its layer blobs under OCI layout names.
//                                       (A plain manifest.json is the image's own manifest in a
//                                       containers dir: layout, and is not read here.)
//   signature-<N>                       containers/image "sigstore" signature files (dir: layout)
//   *.sigstore.json, *.bundle.json      sigstore bundles (cosign v3 referrers)
//   *.dsse.json, *.att.json             DSSE attestation envelopes
// Layer blobs are checked against their descriptor (size and digest); a layer whose bytes do not
// match is dropped and noted, so it can never count as a signature.

#include <filesystem>
#include <string>
#include <vector>

#include "common/error.h"
#include "common/file.h"
#include "verify/policy.h"

namespace digestd::verify {

struct LoadedEvidence {
  Evidence evidence;
  std::vector<std::string> notes;  // what was skipped and why
};

using digestd::ReadFileCapped;

Result<LoadedEvidence> LoadEvidenceDir(const std::filesystem::path& dir);

}  // namespace digestd::verify
