#include "verify/digest.h"

namespace digestd::verify {
namespace {

Error Invalid(std::string_view input, std::string_view why) {
  return MakeError(Module::kVerify, Errc::kInvalidArgument,
                   "invalid digest " + Quote(input) + ": " + std::string(why));
}

bool IsLowerHex(char c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f'); }

}  // namespace

std::string_view ToString(DigestAlgorithm alg) {
  switch (alg) {
    case DigestAlgorithm::kSha256: return "sha256";
    case DigestAlgorithm::kSha512: return "sha512";
  }
  return "unknown";
}

std::string HexEncode(std::string_view raw) {
  static constexpr char kDigits[] = "0123456789abcdef";
  std::string out;
  out.reserve(raw.size() * 2);
  for (unsigned char c : raw) {
    out.push_back(kDigits[c >> 4]);
    out.push_back(kDigits[c & 15]);
  }
  return out;
}

std::optional<std::string> HexDecode(std::string_view hex) {
  if (hex.size() % 2 != 0) return std::nullopt;
  auto val = [](char c) -> int {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    return -1;
  };
  std::string out;
  out.reserve(hex.size() / 2);
  for (std::size_t i = 0; i < hex.size(); i += 2) {
    const int hi = val(hex[i]), lo = val(hex[i + 1]);
    if (hi < 0 || lo < 0) return std::nullopt;
    out.push_back(static_cast<char>(hi * 16 + lo));
  }
  return out;
}

std::string DigestBytes(const Digest& d) { return *HexDecode(d.hex()); }

std::size_t HexLength(DigestAlgorithm alg) {
  return alg == DigestAlgorithm::kSha256 ? 64 : 128;
}

Result<DigestAlgorithm> ParseDigestAlgorithm(std::string_view name) {
  if (name == "sha256") return DigestAlgorithm::kSha256;
  if (name == "sha512") return DigestAlgorithm::kSha512;
  return MakeError(Module::kVerify, Errc::kUnsupported,
                   "unsupported digest algorithm " + Quote(name) + " (want sha256 or sha512)");
}

Result<Digest> Digest::Parse(std::string_view text) {
  // Bound the work before looking at the contents: the longest valid digest is sha512's.
  if (text.size() > 7 + 128) return Invalid(text, "too long");
  const auto colon = text.find(':');
  if (colon == std::string_view::npos) return Invalid(text, "missing ':' after the algorithm");
  const auto alg_name = text.substr(0, colon);
  auto alg = ParseDigestAlgorithm(alg_name);
  if (!alg) return Invalid(text, "unsupported algorithm (want sha256 or sha512)");
  return FromParts(*alg, text.substr(colon + 1)).map_error([&](Error) {
    return Invalid(text, "want " + std::to_string(HexLength(*alg)) + " lowercase hex digits after '" +
                             std::string(alg_name) + ":'");
  });
}

Result<Digest> Digest::FromParts(DigestAlgorithm alg, std::string_view hex) {
  if (hex.size() != HexLength(alg)) {
    return Invalid(hex, "want " + std::to_string(HexLength(alg)) + " hex digits, got " +
                            std::to_string(hex.size()));
  }
  for (char c : hex) {
    if (!IsLowerHex(c)) return Invalid(hex, "only lowercase hex digits allowed");
  }
  return Digest(alg, std::string(hex));
}

Digest Digest::FromBytes(DigestAlgorithm alg, const unsigned char* bytes, std::size_t len) {
  static constexpr char kHex[] = "0123456789abcdef";
  DIGESTD_CHECK(len * 2 == HexLength(alg));
  std::string hex(len * 2, '\0');
  for (std::size_t i = 0; i < len; ++i) {
    hex[2 * i] = kHex[bytes[i] >> 4];
    hex[2 * i + 1] = kHex[bytes[i] & 0xf];
  }
  return Digest(alg, std::move(hex));
}

std::string Digest::ToString() const {
  std::string out(verify::ToString(alg_));
  out.push_back(':');
  out.append(hex_);
  return out;
}

std::string Digest::Short() const {
  std::string out(verify::ToString(alg_));
  out.push_back(':');
  out.append(hex_.substr(0, 12));
  return out;
}

}  // namespace digestd::verify
