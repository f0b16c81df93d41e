#include "verify/tlog.h"

#include <openssl/evp.h>

#include <charconv>

#include <nlohmann/json.hpp>

#include "verify/base64.h"
#include "verify/digest.h"

namespace digestd::verify {
namespace {

using nlohmann::json;

Error Bad(std::string why) { return MakeError(Module::kVerify, Errc::kInvalidArgument, why); }

std::string Sha256(std::string_view a, std::string_view b = {}, std::string_view c = {}) {
  unsigned char out[32];
  EVP_MD_CTX* ctx = EVP_MD_CTX_new();
  EVP_DigestInit_ex(ctx, EVP_sha256(), nullptr);
  EVP_DigestUpdate(ctx, a.data(), a.size());
  EVP_DigestUpdate(ctx, b.data(), b.size());
  EVP_DigestUpdate(ctx, c.data(), c.size());
  unsigned int n = 0;
  EVP_DigestFinal_ex(ctx, out, &n);
  EVP_MD_CTX_free(ctx);
  return std::string(reinterpret_cast<char*>(out), n);
}

// Bundles write int64 fields as decimal strings (protobuf JSON); plain numbers are accepted too.
Result<std::int64_t> Int64Field(const json& obj, std::string_view field, std::string_view where,
                                bool required = true, std::int64_t fallback = 0) {
  auto it = obj.find(field);
  if (it == obj.end()) {
    if (!required) return fallback;
    return Bad(std::string(where) + ": \"" + std::string(field) + "\" missing");
  }
  std::int64_t v = 0;
  if (it->is_number_integer()) {
    v = it->get<std::int64_t>();
  } else if (it->is_string()) {
    const std::string s = *it;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size()) {
      return Bad(std::string(where) + ": \"" + std::string(field) + "\" is not an integer");
    }
  } else {
    return Bad(std::string(where) + ": \"" + std::string(field) + "\" is not an integer");
  }
  if (v < 0) return Bad(std::string(where) + ": \"" + std::string(field) + "\" is negative");
  return v;
}

Result<std::string> B64Field(const json& obj, std::string_view field, std::string_view where) {
  auto it = obj.find(field);
  if (it == obj.end() || !it->is_string()) {
    return Bad(std::string(where) + ": \"" + std::string(field) + "\" missing or not a string");
  }
  auto raw = Base64Decode(it->get<std::string>());
  if (!raw) return Bad(std::string(where) + ": \"" + std::string(field) + "\" is not base64");
  return *raw;
}

struct Note {
  std::string text;    // the signed part: body lines, each ending in '\n'
  std::string origin;
  std::int64_t size = 0;
  std::string root;
  struct Sig {
    std::string name;
    std::string hint;  // 4 bytes
    std::string sig;
  };
  std::vector<Sig> sigs;
};

Result<Note> ParseNote(std::string_view env) {
  if (env.size() > 64 * 1024) return Bad("checkpoint over 64 KiB");
  const std::size_t split = env.find("\n\n");
  if (split == std::string_view::npos) return Bad("checkpoint: no blank line before signatures");
  Note n;
  n.text = std::string(env.substr(0, split + 1));
  std::vector<std::string_view> lines;
  for (std::size_t pos = 0; pos < n.text.size();) {
    const std::size_t nl = n.text.find('\n', pos);
    lines.push_back(std::string_view(n.text).substr(pos, nl - pos));
    pos = nl + 1;
  }
  if (lines.size() < 3) return Bad("checkpoint: too few body lines (want origin, size, root hash)");
  n.origin = std::string(lines[0]);
  if (n.origin.empty()) return Bad("checkpoint: empty origin");
  {
    std::int64_t size = 0;
    auto [p, ec] = std::from_chars(lines[1].data(), lines[1].data() + lines[1].size(), size);
    if (lines[1].empty() || ec != std::errc() || p != lines[1].data() + lines[1].size() || size < 0) {
      return Bad("checkpoint: second line is not a tree size");
    }
    n.size = size;
  }
  auto root = Base64Decode(lines[2]);
  if (!root || root->size() != 32) return Bad("checkpoint: third line is not a base64 root hash");
  n.root = *root;
  std::string_view rest = env.substr(split + 2);
  if (rest.empty() || rest.back() != '\n') return Bad("checkpoint: no signature line");
  static constexpr std::string_view kDash = "\xe2\x80\x94 ";  // U+2014 EM DASH, space
  while (!rest.empty()) {
    const std::size_t nl = rest.find('\n');
    std::string_view line = rest.substr(0, nl);
    rest.remove_prefix(nl + 1);
    if (!line.starts_with(kDash)) return Bad("checkpoint: malformed signature line");
    line.remove_prefix(kDash.size());
    const std::size_t sp = line.rfind(' ');
    if (sp == std::string_view::npos || sp == 0) return Bad("checkpoint: malformed signature line");
    auto raw = Base64Decode(line.substr(sp + 1));
    if (!raw || raw->size() < 5) return Bad("checkpoint: signature is not base64");
    n.sigs.push_back({std::string(line.substr(0, sp)), raw->substr(0, 4), raw->substr(4)});
  }
  return n;
}

}  // namespace

Result<TlogEntry> ParseTlogEntry(const json& j) {
  constexpr std::string_view kWhat = "tlog entry";
  if (!j.is_object()) return Bad("tlog entry is not an object");
  TlogEntry e;
  DIGESTD_ASSIGN_OR_RETURN(e.log_index, Int64Field(j, "logIndex", kWhat));
  auto lid = j.find("logId");
  if (lid == j.end() || !lid->is_object()) return Bad("tlog entry: logId missing");
  DIGESTD_ASSIGN_OR_RETURN(e.log_id, B64Field(*lid, "keyId", "tlog entry logId"));
  auto kv = j.find("kindVersion");
  if (kv == j.end() || !kv->is_object() || !kv->contains("kind") || !kv->contains("version") ||
      !(*kv)["kind"].is_string() || !(*kv)["version"].is_string()) {
    return Bad("tlog entry: kindVersion missing");
  }
  e.kind = (*kv)["kind"];
  e.version = (*kv)["version"];
  DIGESTD_ASSIGN_OR_RETURN(std::int64_t t, Int64Field(j, "integratedTime", kWhat, false, 0));
  if (t != 0) e.integrated_time = t;
  if (auto ip = j.find("inclusionPromise"); ip != j.end() && !ip->is_null()) {
    if (!ip->is_object()) return Bad("tlog entry: inclusionPromise is not an object");
    DIGESTD_ASSIGN_OR_RETURN(e.set, B64Field(*ip, "signedEntryTimestamp", "inclusionPromise"));
  }
  if (auto pr = j.find("inclusionProof"); pr != j.end() && !pr->is_null()) {
    if (!pr->is_object()) return Bad("tlog entry: inclusionProof is not an object");
    InclusionProof p;
    DIGESTD_ASSIGN_OR_RETURN(p.log_index, Int64Field(*pr, "logIndex", "inclusionProof"));
    DIGESTD_ASSIGN_OR_RETURN(p.tree_size, Int64Field(*pr, "treeSize", "inclusionProof"));
    DIGESTD_ASSIGN_OR_RETURN(p.root_hash, B64Field(*pr, "rootHash", "inclusionProof"));
    if (p.root_hash.size() != 32) return Bad("inclusionProof: rootHash is not 32 bytes");
    auto hashes = pr->find("hashes");
    if (hashes != pr->end()) {
      if (!hashes->is_array() || hashes->size() > 64) {
        return Bad("inclusionProof: hashes is not an array of at most 64");
      }
      for (const auto& h : *hashes) {
        auto raw = h.is_string() ? Base64Decode(h.get<std::string>()) : Result<std::string>(Bad(""));
        if (!raw || raw->size() != 32) return Bad("inclusionProof: a hash is not 32 base64 bytes");
        p.hashes.push_back(*raw);
      }
    }
    if (auto cp = pr->find("checkpoint"); cp != pr->end()) {
      if (!cp->is_object() || !cp->contains("envelope") || !(*cp)["envelope"].is_string()) {
        return Bad("inclusionProof: checkpoint.envelope missing");
      }
      p.checkpoint = (*cp)["envelope"].get<std::string>();
    }
    e.proof = std::move(p);
  }
  auto body = j.find("canonicalizedBody");
  if (body == j.end() || !body->is_string()) return Bad("tlog entry: canonicalizedBody missing");
  e.body_b64 = *body;
  auto raw = Base64Decode(e.body_b64);
  if (!raw) return Bad("tlog entry: canonicalizedBody is not base64");
  e.body = std::move(*raw);
  return e;
}

Result<void> VerifySignedEntryTimestamp(const TlogEntry& e, const LogKey& log) {
  if (!e.set) return Bad("the entry has no signed entry timestamp");
  if (!e.integrated_time) return Bad("the entry has a SET but no integratedTime");
  // Canonical JSON (RFC 8785 for these types): keys sorted, no whitespace.
  const json canon = {{"body", e.body_b64},
                      {"integratedTime", *e.integrated_time},
                      {"logID", HexEncode(e.log_id)},
                      {"logIndex", e.log_index}};
  auto ok = log.key->Verify(canon.dump(), *e.set);
  if (!ok) return Bad("signed entry timestamp does not verify with the log key");
  return {};
}

std::string MerkleLeafHash(std::string_view leaf) { return Sha256(std::string_view("\0", 1), leaf); }

Result<std::string> RootFromInclusionProof(std::int64_t index, std::int64_t size,
                                           std::string_view leaf_hash,
                                           const std::vector<std::string>& proof) {
  if (index < 0 || size <= 0 || index >= size) return Bad("inclusion proof index outside the tree");
  std::uint64_t fn = static_cast<std::uint64_t>(index);
  std::uint64_t sn = static_cast<std::uint64_t>(size) - 1;
  std::string r(leaf_hash);
  static constexpr std::string_view kNode("\x01", 1);
  for (const auto& p : proof) {
    if (sn == 0) return Bad("inclusion proof has too many hashes");
    if ((fn & 1) == 1 || fn == sn) {
      r = Sha256(kNode, p, r);
      if ((fn & 1) == 0) {
        while ((fn & 1) == 0 && fn != 0) {
          fn >>= 1;
          sn >>= 1;
        }
      }
    } else {
      r = Sha256(kNode, r, p);
    }
    fn >>= 1;
    sn >>= 1;
  }
  if (sn != 0) return Bad("inclusion proof has too few hashes");
  return r;
}

Result<void> VerifyInclusion(const TlogEntry& e, const LogKey& log) {
  if (!e.proof) return Bad("the entry has no inclusion proof");
  const InclusionProof& p = *e.proof;
  DIGESTD_ASSIGN_OR_RETURN(std::string root, RootFromInclusionProof(p.log_index, p.tree_size,
                                                                    MerkleLeafHash(e.body), p.hashes));
  if (root != p.root_hash) return Bad("inclusion proof does not reproduce its root hash");
  if (!p.checkpoint) return Bad("inclusion proof without a checkpoint");
  DIGESTD_ASSIGN_OR_RETURN(Note note, ParseNote(*p.checkpoint));
  if (note.size != p.tree_size || note.root != p.root_hash) {
    return Bad("checkpoint does not match the inclusion proof (tree size or root hash)");
  }
  const std::string_view hint = std::string_view(log.log_id).substr(0, 4);
  bool tried = false;
  for (const auto& s : note.sigs) {
    if (s.hint != hint) continue;  // a witness or another key: not ours to judge
    tried = true;
    if (log.key->Verify(note.text, s.sig)) return {};
  }
  return Bad(tried ? "checkpoint signature does not verify with the log key"
                   : "checkpoint carries no signature by the log key");
}

}  // namespace digestd::verify
