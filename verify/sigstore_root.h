#pragma once

// A sigstore trusted root (`application/vnd.dev.sigstore.trustedroot+json;version=0.1`): the
// transparency logs, certificate authorities (Fulcio), CT logs and timestamp authorities a keyless
// signature may be checked against, each with a validity window. Loaded strictly: a missing
// `validFor.start`, an unknown key type, an empty certificate chain or bad base64 is refused with
// the entry named. Immutable after loading.

#include <cstdint>
#include <filesystem>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/public_key.h"

namespace digestd::verify {

// A closed interval of unix seconds: `start` is required, `end` is inclusive and optional.
struct ValidFor {
  std::int64_t start = 0;
  std::optional<std::int64_t> end;
  bool Contains(std::int64_t t) const { return t >= start && (!end || t <= *end); }
};

// A transparency log (Rekor) or a CT log.
struct LogKey {
  std::string base_url;
  std::string log_id;  // raw bytes of logId.keyId (32 bytes for every log seen)
  PublicKeyPtr key;
  ValidFor valid;
};

// A certificate authority (Fulcio) or a timestamp authority: the chain from the issuing
// certificate to the root (DER, root last).
struct Authority {
  std::string uri;
  std::vector<std::string> chain_der;
  ValidFor valid;
};

class SigstoreTrustedRoot {
 public:
  static Result<SigstoreTrustedRoot> Parse(std::string_view json_text, std::string_view source);
  static Result<SigstoreTrustedRoot> LoadFile(const std::filesystem::path& path);
  // A root assembled from configuration (a policy's Fulcio CA and Rekor keys).
  static SigstoreTrustedRoot FromParts(std::vector<Authority> cas, std::vector<LogKey> tlogs,
                                       std::vector<LogKey> ctlogs = {},
                                       std::vector<Authority> tsas = {});

  const std::vector<LogKey>& tlogs() const { return tlogs_; }
  const std::vector<LogKey>& ctlogs() const { return ctlogs_; }
  const std::vector<Authority>& certificate_authorities() const { return cas_; }
  const std::vector<Authority>& timestamp_authorities() const { return tsas_; }

  const LogKey* FindTlog(std::string_view log_id) const;

 private:
  std::vector<LogKey> tlogs_;
  std::vector<LogKey> ctlogs_;
  std::vector<Authority> cas_;
  std::vector<Authority> tsas_;
};

}  // namespace digestd::verify
