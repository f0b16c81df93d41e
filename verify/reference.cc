#include "verify/reference.h"

#include <algorithm>

namespace digestd::verify {
namespace {

Error Bad(std::string_view input, std::string_view why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument,
                   "invalid image reference " + Quote(input) + ": " + std::string(why));
}

bool IsLowerAlnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool IsAlnum(char c) { return IsLowerAlnum(c) || (c >= 'A' && c <= 'Z'); }

// path-component := [a-z0-9]+ ((?:[._]|__|[-]+) [a-z0-9]+)*
Result<void> ValidateComponent(std::string_view comp, std::string_view input) {
  if (comp.empty()) return Bad(input, "empty path component");
  if (comp == ".." || comp == ".") return Bad(input, "path component " + Quote(comp) + " not allowed");
  for (char c : comp) {
    if (c >= 'A' && c <= 'Z') return Bad(input, "repository name must be lowercase");
  }
  std::size_t i = 0;
  auto alnum_run = [&]() {
    const std::size_t start = i;
    while (i < comp.size() && IsLowerAlnum(comp[i])) ++i;
    return i > start;
  };
  if (!alnum_run()) return Bad(input, "path component " + Quote(comp) + " must start with [a-z0-9]");
  while (i < comp.size()) {
    const char c = comp[i];
    if (c == '.') {
      ++i;
    } else if (c == '_') {
      ++i;
      if (i < comp.size() && comp[i] == '_') ++i;
    } else if (c == '-') {
      while (i < comp.size() && comp[i] == '-') ++i;
    } else {
      return Bad(input, "character " + Quote(std::string_view(&comp[i], 1)) +
                            " not allowed in repository path");
    }
    if (!alnum_run()) {
      return Bad(input, "separator in " + Quote(comp) + " must be followed by [a-z0-9]");
    }
  }
  return {};
}

}  // namespace

Result<void> ValidateRegistryHost(std::string_view host) {
  if (host.empty()) return Bad(host, "empty registry host");
  std::string_view name = host;
  std::string_view port;
  if (host.front() == '[') {
    const auto close = host.find(']');
    if (close == std::string_view::npos) return Bad(host, "unterminated IPv6 address");
    const auto v6 = host.substr(1, close - 1);
    if (v6.empty() || v6.find_first_not_of("0123456789abcdefABCDEF:.") != std::string_view::npos) {
      return Bad(host, "bad IPv6 address");
    }
    const auto rest = host.substr(close + 1);
    if (!rest.empty()) {
      if (rest.front() != ':') return Bad(host, "junk after IPv6 address");
      port = rest.substr(1);
      if (port.empty()) return Bad(host, "empty port");
    }
    name = {};
  } else if (const auto colon = host.find(':'); colon != std::string_view::npos) {
    name = host.substr(0, colon);
    port = host.substr(colon + 1);
    if (port.empty()) return Bad(host, "empty port");
  }
  if (!port.empty()) {
    if (port.size() > 5 || port.find_first_not_of("0123456789") != std::string_view::npos ||
        std::stoul(std::string(port)) > 65535) {
      return Bad(host, "bad port " + Quote(port));
    }
  }
  if (host.front() == '[') return {};
  // domain-component := [a-zA-Z0-9] | [a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9], joined by '.'
  std::size_t start = 0;
  while (true) {
    const auto dot = name.find('.', start);
    const auto comp = name.substr(start, dot == std::string_view::npos ? dot : dot - start);
    if (comp.empty()) return Bad(host, "empty host component");
    if (!IsAlnum(comp.front()) || !IsAlnum(comp.back())) {
      return Bad(host, "host component " + Quote(comp) + " must start and end with [A-Za-z0-9]");
    }
    for (char c : comp) {
      if (!IsAlnum(c) && c != '-') {
        return Bad(host, "character " + Quote(std::string_view(&c, 1)) + " not allowed in host");
      }
    }
    if (dot == std::string_view::npos) break;
    start = dot + 1;
  }
  return {};
}

Result<std::string> NormalizeRegistryHost(std::string_view host) {
  DIGESTD_RETURN_IF_ERROR(ValidateRegistryHost(host));
  std::string out = NormalizeHostPart(host);
  if (out.ends_with(":443")) out.resize(out.size() - 4);
  if (out == "index.docker.io") out = std::string(kDockerHub);
  return out;
}

std::string NormalizeHostPart(std::string_view scope_or_pattern) {
  std::string out(scope_or_pattern);
  const auto end = std::min(out.find('/'), out.size());
  for (std::size_t i = 0; i < end; ++i) {
    if (out[i] >= 'A' && out[i] <= 'Z') out[i] = static_cast<char>(out[i] - 'A' + 'a');
  }
  return out;
}

Result<void> ValidateRepositoryPath(std::string_view path) {
  if (path.empty()) return Bad(path, "empty repository");
  std::size_t start = 0;
  while (true) {
    const auto slash = path.find('/', start);
    const auto comp = path.substr(start, slash == std::string_view::npos ? slash : slash - start);
    DIGESTD_RETURN_IF_ERROR(ValidateComponent(comp, path));
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return {};
}

Result<void> ValidateTag(std::string_view tag) {
  if (tag.empty()) return Bad(tag, "empty tag");
  if (tag.size() > kMaxTagLength) {
    return Bad(tag.substr(0, 40), "tag longer than " + std::to_string(kMaxTagLength) + " characters");
  }
  auto word = [](char c) { return IsAlnum(c) || c == '_'; };
  if (!word(tag.front())) return Bad(tag, "tag must start with [A-Za-z0-9_]");
  for (char c : tag) {
    if (!word(c) && c != '.' && c != '-') {
      return Bad(tag, "character " + Quote(std::string_view(&c, 1)) + " not allowed in tag");
    }
  }
  return {};
}

Result<Reference> Reference::Parse(std::string_view text) {
  if (text.empty()) return Bad(text, "empty");
  if (text.size() > kMaxReferenceLength) {
    return Bad(text, "longer than " + std::to_string(kMaxReferenceLength) + " bytes");
  }
  for (char c : text) {
    if (static_cast<unsigned char>(c) <= 0x20 || static_cast<unsigned char>(c) >= 0x7f) {
      return Bad(text, "control, space or non-ASCII character");
    }
  }
  Reference ref;
  std::string_view rest = text;
  if (const auto at = rest.find('@'); at != std::string_view::npos) {
    auto d = Digest::Parse(rest.substr(at + 1));
    if (!d) return Bad(text, d.error().context());
    ref.digest_ = std::move(*d);
    rest = rest.substr(0, at);
  }
  const auto last_slash = rest.rfind('/');
  const auto colon = rest.rfind(':');
  if (colon != std::string_view::npos &&
      (last_slash == std::string_view::npos || colon > last_slash)) {
    const auto tag = rest.substr(colon + 1);
    if (auto r = ValidateTag(tag); !r) return Bad(text, r.error().context());
    ref.tag_ = std::string(tag);
    rest = rest.substr(0, colon);
  }
  // Docker's domain rule: the first component is a registry host when it has '.' or ':', is
  // "localhost", or has uppercase letters (which a repository cannot have).
  std::string_view domain, path;
  const auto slash = rest.find('/');
  const auto first = rest.substr(0, slash);
  const bool first_is_host =
      slash != std::string_view::npos &&
      (first.find_first_of(".:") != std::string_view::npos || first == "localhost" ||
       first.find_first_of("ABCDEFGHIJKLMNOPQRSTUVWXYZ") != std::string_view::npos ||
       first.front() == '[');
  if (first_is_host) {
    domain = first;
    path = rest.substr(slash + 1);
  } else {
    domain = kDockerHub;
    path = rest;
  }
  auto host = NormalizeRegistryHost(domain);
  if (!host) return Bad(text, host.error().context());
  // The canonical form must parse back to the same reference: a first component that was a host
  // only by its uppercase letters ("Reg/app") or its ":443" ("reg:443/app") would, once
  // normalised, read as a Docker Hub namespace. Refused rather than guessed.
  if (first_is_host && host->find_first_of(".:") == std::string::npos && *host != "localhost" &&
      host->front() != '[') {
    return Bad(text, "registry host " + Quote(domain) +
                         " needs a '.' or a port other than 443 (or is localhost): hosts are "
                         "compared in lowercase, where " + Quote(*host) +
                         " would name a Docker Hub namespace");
  }
  if (auto r = ValidateRepositoryPath(path); !r) return Bad(text, r.error().context());
  ref.registry_ = std::move(*host);
  ref.repository_ = std::string(path);
  if (ref.registry_ == kDockerHub && ref.repository_.find('/') == std::string::npos) {
    ref.repository_ = "library/" + ref.repository_;
  }
  if (ref.registry_.size() + 1 + ref.repository_.size() > kMaxNameLength) {
    return Bad(text, "name longer than " + std::to_string(kMaxNameLength) + " characters");
  }
  return ref;
}

std::string Reference::Name() const { return registry_ + "/" + repository_; }

std::string Reference::String() const {
  std::string out = Name();
  if (!tag_.empty()) out += ":" + tag_;
  if (digest_) out += "@" + digest_->ToString();
  return out;
}

Reference Reference::WithDigest(const Digest& d) const {
  Reference r = *this;
  r.digest_ = d;
  return r;
}

Result<Reference> Reference::WithTag(std::string_view tag) const {
  DIGESTD_RETURN_IF_ERROR(ValidateTag(tag));
  Reference r = *this;
  r.tag_ = std::string(tag);
  return r;
}

Reference Reference::WithoutTag() const {
  Reference r = *this;
  r.tag_.clear();
  return r;
}

}  // namespace digestd::verify
