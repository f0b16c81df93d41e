#pragma once

// Policy and key scopes, as containers-policy.json(5) defines them for the docker transport:
// a full reference with tag or digest, a repository, a namespace (repository prefix at a '/'),
// a registry host[:port], or a "*.domain" wildcard matching subdomains of domain.

#include <string>
#include <string_view>
#include <vector>

#include "common/error.h"
#include "verify/reference.h"

namespace digestd::verify {

// Scopes that match `ref`, most specific first: the reference as given, the repository, each
// parent namespace, the registry, then wildcards from the longest domain suffix to the shortest.
std::vector<std::string> ScopeCandidates(const Reference& ref);

// Validates a scope string; the error names what is wrong.
Result<void> ValidateScope(std::string_view scope);

bool ScopeMatches(std::string_view scope, const Reference& ref);

}  // namespace digestd::verify
