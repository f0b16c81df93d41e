#include "verify/scope.h"

#include <algorithm>

namespace digestd::verify {

std::vector<std::string> ScopeCandidates(const Reference& ref) {
  std::vector<std::string> out;
  if (ref.has_tag() || ref.has_digest()) out.push_back(ref.String());
  // With both a tag and a digest, the digest-only and tag-only forms are exact references too.
  if (ref.has_tag() && ref.has_digest()) {
    out.push_back(ref.WithoutTag().String());
    out.push_back(ref.Name() + ":" + ref.tag());
  }
  std::string name = ref.Name();
  out.push_back(name);
  for (auto slash = name.rfind('/'); slash != std::string::npos && slash > 0;
       slash = name.rfind('/', slash - 1)) {
    out.push_back(name.substr(0, slash));
    if (slash == 0) break;
  }
  // The registry itself is the last element pushed by the loop above (name up to first '/').
  std::string host = ref.registry();
  if (!host.empty() && host.front() != '[') {
    if (auto colon = host.find(':'); colon != std::string::npos) host = host.substr(0, colon);
    for (auto dot = host.find('.'); dot != std::string::npos; dot = host.find('.', dot + 1)) {
      out.push_back("*" + host.substr(dot));
    }
  }
  return out;
}

Result<void> ValidateScope(std::string_view scope) {
  auto bad = [&](std::string why) {
    return MakeError(Module::kVerify, Errc::kInvalidArgument,
                     "invalid scope " + Quote(scope) + ": " + why);
  };
  if (scope.empty()) return bad("empty");
  if (scope.starts_with("*.")) {
    const auto domain = scope.substr(2);
    if (domain.find_first_of(":/*") != std::string_view::npos) {
      return bad("a wildcard scope is \"*.\" followed by a domain name");
    }
    if (auto r = ValidateRegistryHost(domain); !r) return bad(r.error().context());
    return {};
  }
  if (scope.find('*') != std::string_view::npos) return bad("'*' only as a \"*.domain\" prefix");
  const auto slash = scope.find('/');
  if (slash == std::string_view::npos) {
    if (auto r = ValidateRegistryHost(scope); !r) return bad(r.error().context());
    return {};
  }
  // Scopes are fully qualified: the first component must be a registry host, never defaulted.
  if (auto r = ValidateRegistryHost(scope.substr(0, slash)); !r) return bad(r.error().context());
  auto ref = Reference::Parse(scope);
  if (!ref) return bad(ref.error().context());
  if (auto host = NormalizeRegistryHost(scope.substr(0, slash)); !host || ref->registry() != *host) {
    return bad("must start with a registry host (e.g. \"docker.io/library/busybox\")");
  }
  return {};
}

bool ScopeMatches(std::string_view scope, const Reference& ref) {
  const auto c = ScopeCandidates(ref);
  return std::find(c.begin(), c.end(), scope) != c.end();
}

}  // namespace digestd::verify
