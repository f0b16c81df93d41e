#pragma once

// Errors are values. Every fallible function returns Result<T>; an Error names the module that
// failed, a closed failure code, the errno when a syscall failed, and text a human can act on.

#include <cstdint>
#include <string>
#include <string_view>
#include <utility>

#include <tl/expected.hpp>

namespace digestd {

enum class Module : std::uint8_t { kCommon, kVerify, kStore, kFuse, kDaemon, kSnapshotter, kTools };

// Closed set of failure kinds shared by all modules. Callers branch on these; the text is for humans.
enum class Errc : std::uint8_t {
  kInvalidArgument,  // caller or input violated a documented contract (bad digest, bad name)
  kNotFound,         // the object does not exist
  kAlreadyExists,    // the object exists (e.g. a blob that is already committed)
  kDigestMismatch,   // content hashed to another digest than expected
  kSizeMismatch,     // content size differs from the expected size
  kTooLarge,         // input exceeds a configured or hard limit
  kCorrupt,          // persistent state (index record, file on disk) failed validation
  kIo,               // a syscall or library I/O call failed; errno says which
  kPermission,       // ownership, mode or authorization check failed
  kUnsupported,      // a newer format, an unknown algorithm, a missing kernel feature
  kBusy,             // the resource is held (a second daemon on one store)
  kAborted,          // the operation was cancelled or discarded
  kInternal,         // a library returned something it documents as impossible
};

std::string_view ToString(Module module);
std::string_view ToString(Errc code);

class Error {
 public:
  Error(Module module, Errc code, std::string context, int sys_errno = 0)
      : module_(module), code_(code), sys_errno_(sys_errno), context_(std::move(context)) {}

  Module module() const { return module_; }
  Errc code() const { return code_; }
  // errno of the failed syscall, 0 when none.
  int sys_errno() const { return sys_errno_; }
  const std::string& context() const { return context_; }

  // "store: digest-mismatch: <context>[: <strerror>]"
  std::string ToString() const;

  // Prepends "what: " to the context; for adding the caller's view while propagating.
  Error&& Wrap(std::string_view what) &&;

 private:
  Module module_;
  Errc code_;
  int sys_errno_;
  std::string context_;
};

template <class T>
class [[nodiscard]] Result : public tl::expected<T, Error> {
 public:
  using tl::expected<T, Error>::expected;
  Result(const Error& e) : tl::expected<T, Error>(tl::unexpected<Error>(e)) {}  // NOLINT
  Result(Error&& e) : tl::expected<T, Error>(tl::unexpected<Error>(std::move(e))) {}  // NOLINT
  Result(tl::expected<T, Error> e) : tl::expected<T, Error>(std::move(e)) {}  // NOLINT
};

inline Error MakeError(Module module, Errc code, std::string context, int sys_errno = 0) {
  return Error(module, code, std::move(context), sys_errno);
}

// An Error for a failed syscall: captures errno at the call.
Error SysError(Module module, std::string context);
Error SysError(Module module, std::string context, int sys_errno);

// Renders untrusted text for an error message or log: printable ASCII is kept, everything else is
// \xNN-escaped, and the result is cut at max_len input bytes with "..." appended.
std::string Quote(std::string_view untrusted, std::size_t max_len = 96);

}  // namespace digestd

// Propagates the error of a Result expression; the value is discarded.
#define DIGESTD_RETURN_IF_ERROR(expr) \
  DIGESTD_RETURN_IF_ERROR_IMPL_(DIGESTD_CONCAT_(digestd_status_, __LINE__), expr)
#define DIGESTD_RETURN_IF_ERROR_IMPL_(tmp, expr) \
  do {                                           \
    auto tmp = (expr);                           \
    if (!tmp) return std::move(tmp).error();     \
  } while (0)

#define DIGESTD_CONCAT_INNER_(a, b) a##b
#define DIGESTD_CONCAT_(a, b) DIGESTD_CONCAT_INNER_(a, b)
// Binds the value of a Result expression to `lhs`, or returns its error.
#define DIGESTD_ASSIGN_OR_RETURN(lhs, expr) \
  DIGESTD_ASSIGN_OR_RETURN_IMPL_(DIGESTD_CONCAT_(digestd_result_, __LINE__), lhs, expr)
#define DIGESTD_ASSIGN_OR_RETURN_IMPL_(tmp, lhs, expr) \
  auto tmp = (expr);                                   \
  if (!tmp) return std::move(tmp).error();             \
  lhs = std::move(*tmp)

// Invariant checks: a broken invariant aborts with the location; never used for input errors.
#define DIGESTD_CHECK(cond)                                                   \
  do {                                                                        \
    if (!(cond)) ::digestd::internal::CheckFailed(__FILE__, __LINE__, #cond); \
  } while (0)

namespace digestd::internal {
[[noreturn]] void CheckFailed(const char* file, int line, const char* cond);
}  // namespace digestd::internal
