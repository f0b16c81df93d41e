#include "common/names.h"

namespace digestd {

bool ValidContainerdNamespace(std::string_view ns) {
  if (ns.empty() || ns.size() > 76) return false;
  bool after_sep = true;  // a word must start at the beginning and after each separator
  for (char c : ns) {
    const bool alnum = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9');
    if (alnum) {
      after_sep = false;
    } else if (c == '.' || c == '_' || c == '-') {
      if (after_sep) return false;
      after_sep = true;
    } else {
      return false;
    }
  }
  return !after_sep;
}

}  // namespace digestd
