#include "common/error.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>

namespace digestd {

std::string_view ToString(Module module) {
  switch (module) {
    case Module::kCommon: return "common";
    case Module::kVerify: return "verify";
    case Module::kStore: return "store";
    case Module::kFuse: return "fusefs";
    case Module::kDaemon: return "daemon";
    case Module::kSnapshotter: return "snapshotter";
    case Module::kTools: return "tools";
  }
  return "unknown-module";
}

std::string_view ToString(Errc code) {
  switch (code) {
    case Errc::kInvalidArgument: return "invalid-argument";
    case Errc::kNotFound: return "not-found";
    case Errc::kAlreadyExists: return "already-exists";
    case Errc::kDigestMismatch: return "digest-mismatch";
    case Errc::kSizeMismatch: return "size-mismatch";
    case Errc::kTooLarge: return "too-large";
    case Errc::kCorrupt: return "corrupt";
    case Errc::kIo: return "io";
    case Errc::kPermission: return "permission";
    case Errc::kUnsupported: return "unsupported";
    case Errc::kBusy: return "busy";
    case Errc::kAborted: return "aborted";
    case Errc::kInternal: return "internal";
  }
  return "unknown-code";
}

std::string Error::ToString() const {
  std::string out;
  out.append(digestd::ToString(module_)).append(": ");
  out.append(digestd::ToString(code_)).append(": ");
  out.append(context_);
  if (sys_errno_ != 0) {
    out.append(": ").append(std::strerror(sys_errno_));
  }
  return out;
}

Error&& Error::Wrap(std::string_view what) && {
  context_ = std::string(what) + ": " + context_;
  return std::move(*this);
}

Error SysError(Module module, std::string context) {
  return SysError(module, std::move(context), errno);
}

Error SysError(Module module, std::string context, int sys_errno) {
  return Error(module, Errc::kIo, std::move(context), sys_errno);
}

std::string Quote(std::string_view untrusted, std::size_t max_len) {
  static constexpr char kHex[] = "0123456789abcdef";
  std::string out;
  out.reserve(std::min(untrusted.size(), max_len) + 8);
  out.push_back('"');
  std::size_t n = 0;
  for (char c : untrusted) {
    if (n++ == max_len) {
      out.append("...");
      break;
    }
    const auto u = static_cast<unsigned char>(c);
    if (u >= 0x20 && u < 0x7f && c != '"' && c != '\\') {
      out.push_back(c);
    } else {
      out.append("\\x");
      out.push_back(kHex[u >> 4]);
      out.push_back(kHex[u & 0xf]);
    }
  }
  out.push_back('"');
  return out;
}

namespace internal {
void CheckFailed(const char* file, int line, const char* cond) {
  std::fprintf(stderr, "CHECK failed at %s:%d: %s\n", file, line, cond);
  std::abort();
}
}  // namespace internal

}  // namespace digestd
