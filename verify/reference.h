#pragma once

// Image references, parsed and normalised by the distribution reference grammar:
//   [registry-host[:port]/]path-component(/path-component)*[:tag][@digest]
// with Docker's defaults: no registry means docker.io, a single component on docker.io gets
// "library/", and "index.docker.io" is "docker.io". Everything else is refused with a message
// naming what is wrong: uppercase repository, empty or ".." components, bad separators, a tag over
// 128 characters or with bad characters, a bad digest, control characters, over-long input.

#include <optional>
#include <string>
#include <string_view>

#include "common/error.h"
#include "verify/digest.h"

namespace digestd::verify {

inline constexpr std::size_t kMaxReferenceLength = 1024;  // whole input
inline constexpr std::size_t kMaxNameLength = 255;        // registry/repository
inline constexpr std::size_t kMaxTagLength = 128;
inline constexpr std::string_view kDockerHub = "docker.io";

class Reference {
 public:
  static Result<Reference> Parse(std::string_view text);

  const std::string& registry() const { return registry_; }      // "docker.io", "host:5000"
  const std::string& repository() const { return repository_; }  // "library/busybox"
  const std::string& tag() const { return tag_; }                // empty when none
  const std::optional<Digest>& digest() const { return digest_; }
  bool has_tag() const { return !tag_.empty(); }
  bool has_digest() const { return digest_.has_value(); }

  // "registry/repository"
  std::string Name() const;
  // Canonical form: "registry/repository[:tag][@digest]".
  std::string String() const;

  // Copies with the tag or digest replaced (both validated by the caller's construction).
  Reference WithDigest(const Digest& d) const;
  Result<Reference> WithTag(std::string_view tag) const;
  Reference WithoutTag() const;

  friend bool operator==(const Reference&, const Reference&) = default;

 private:
  Reference() = default;
  std::string registry_;
  std::string repository_;
  std::string tag_;
  std::optional<Digest> digest_;
};

// Validators shared with policy scope parsing.
Result<void> ValidateRegistryHost(std::string_view host);  // host[:port] or [v6][:port]
// The one canonical spelling of a registry host, used everywhere a host is compared (references,
// policy scopes, allowedRegistries, denyReferences, the config's registries): validated, ASCII
// lowercased (DNS names are case-insensitive, so "REG.example.com" is "reg.example.com"),
// "index.docker.io" is "docker.io", and the HTTPS default port is dropped ("h:443" is "h").
// Non-ASCII (Unicode) host names are refused, as the distribution reference grammar does: an
// internationalised name is written in its ASCII (punycode, "xn--") form.
Result<std::string> NormalizeRegistryHost(std::string_view host);
// A policy scope or a glob over references ("host[/path...]"): its host part (everything before
// the first '/') lowercased, so that it compares with normalised references. "*." prefixes stay.
std::string NormalizeHostPart(std::string_view scope_or_pattern);
Result<void> ValidateRepositoryPath(std::string_view path);
Result<void> ValidateTag(std::string_view tag);

}  // namespace digestd::verify
