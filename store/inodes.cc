// Inode ranges of the mount, recorded in the index (Store::InodesFor, docs/architecture.md
// "Live restart"). Records live in the meta column family:
//   "inodes/<kind>/<digest>"        -> "<first> <count> <layout>"
//   "inode-end/<last, 16 hex>"      -> "<kind> <digest> <first> <count>"  (found by a forward seek)
//   "inode-next"                    -> the first number never handed out
#include <charconv>
#include "store/errors.h"
#include <cstdio>

#include "store/store_impl.h"

namespace digestd::store {
namespace {

constexpr std::string_view kNextKey = "inode-next";
constexpr std::string_view kEndPrefix = "inode-end/";

std::string RangeKey(InodeKind kind, const Digest& digest) {
  return "inodes/" + std::to_string(static_cast<int>(kind)) + "/" + digest.ToString();
}

std::string EndKey(std::uint64_t last) {
  char buf[17];
  std::snprintf(buf, sizeof(buf), "%016llx", static_cast<unsigned long long>(last));
  return std::string(kEndPrefix) + buf;
}

Error Corrupt(std::string_view key, std::string_view value) {
  return StoreError(Errc::kCorrupt,
                   "inode record " + Quote(key) + " = " + Quote(value) + " is malformed");
}

struct Recorded {
  std::uint64_t first = 0;
  std::uint64_t count = 0;
  std::uint64_t layout = 0;
};

Result<std::optional<Recorded>> GetRange(const Index& index, InodeKind kind, const Digest& d) {
  const std::string key = RangeKey(kind, d);
  DIGESTD_ASSIGN_OR_RETURN(auto value, index.Get(Cf::kMeta, key));
  if (!value) return std::optional<Recorded>();
  std::vector<std::string_view> f;
  Recorded r;
  if (!Fields(*value, 3, f) || !ParseU64(f[0], r.first) || !ParseU64(f[1], r.count) ||
      !ParseU64(f[2], r.layout) || r.count == 0 || r.first < kFirstRangeIno ||
      r.first + r.count < r.first) {
    return Corrupt(key, *value);
  }
  return std::optional<Recorded>(r);
}

Result<std::uint64_t> LoadNext(Store::Impl& impl) {
  if (impl.inode_next) return *impl.inode_next;
  DIGESTD_ASSIGN_OR_RETURN(auto value, impl.index->Get(Cf::kMeta, kNextKey));
  std::uint64_t next = kFirstRangeIno;
  if (value && (!ParseU64(*value, next) || next < kFirstRangeIno)) {
    return Corrupt(kNextKey, *value);
  }
  // The counter is written with every range, but a range recorded without it (a damaged index)
  // must still never be handed out twice: start after the highest recorded end.
  DIGESTD_RETURN_IF_ERROR(impl.index->ScanPrefix(
      Cf::kMeta, kEndPrefix, [&](std::string_view k, std::string_view) {
        std::uint64_t end = 0;
        const auto hex = k.substr(kEndPrefix.size());
        auto [p, ec] = std::from_chars(hex.data(), hex.data() + hex.size(), end, 16);
        if (ec == std::errc() && p == hex.data() + hex.size() && end + 1 > next) next = end + 1;
        return true;
      }));
  impl.inode_next = next;
  return next;
}

}  // namespace

bool ParseU64(std::string_view s, std::uint64_t& out) {
  if (s.empty() || s.size() > 20) return false;
  auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
  return ec == std::errc() && p == s.data() + s.size();
}

bool Fields(std::string_view s, std::size_t n, std::vector<std::string_view>& out) {
  out.clear();
  while (true) {
    const auto sp = s.find(' ');
    out.push_back(s.substr(0, sp));
    if (sp == std::string_view::npos) break;
    s.remove_prefix(sp + 1);
  }
  return out.size() == n;
}


Result<void> AddInodeRange(Store::Impl& impl, Index::Batch& batch, InodeKind kind,
                           const Digest& digest, std::uint64_t count) {
  if (count == 0) count = 1;
  DIGESTD_ASSIGN_OR_RETURN(auto old, GetRange(*impl.index, kind, digest));
  if (old && old->layout == kInodeLayout && old->count >= count) return {};
  DIGESTD_ASSIGN_OR_RETURN(auto next, LoadNext(impl));
  if (next + count < next || next + count > (std::uint64_t{1} << 62)) {
    return StoreError(Errc::kTooLarge, "inode numbers exhausted");
  }
  if (old) batch.Delete(Cf::kMeta, EndKey(old->first + old->count - 1));
  batch.Put(Cf::kMeta, RangeKey(kind, digest),
            std::to_string(next) + " " + std::to_string(count) + " " + std::to_string(kInodeLayout));
  batch.Put(Cf::kMeta, EndKey(next + count - 1),
            std::to_string(static_cast<int>(kind)) + " " + digest.ToString() + " " +
                std::to_string(next) + " " + std::to_string(count));
  impl.inode_next = next + count;
  batch.Put(Cf::kMeta, kNextKey, std::to_string(next + count));
  return {};
}

Result<InodeRange> Store::InodesFor(InodeKind kind, const Digest& digest, std::uint64_t count) {
  if (count == 0) count = 1;
  auto& impl = *impl_;
  std::lock_guard lock(impl.inode_mu);
  DIGESTD_ASSIGN_OR_RETURN(auto have, GetRange(*impl.index, kind, digest));
  if (!have || have->layout != kInodeLayout || have->count < count) {
    Index::Batch batch;
    DIGESTD_RETURN_IF_ERROR(AddInodeRange(impl, batch, kind, digest, count));
    DIGESTD_RETURN_IF_ERROR(impl.index->Write(batch));
    DIGESTD_ASSIGN_OR_RETURN(have, GetRange(*impl.index, kind, digest));
    if (!have) return StoreError(Errc::kInternal, "inode range vanished");
  }
  return InodeRange{.kind = kind, .digest = digest, .first = have->first, .count = have->count};
}

Result<std::vector<InodeRange>> Store::InodeRangesOf(const Digest& digest) const {
  std::vector<InodeRange> out;
  for (auto kind : {InodeKind::kLayer, InodeKind::kImage, InodeKind::kBlob}) {
    DIGESTD_ASSIGN_OR_RETURN(auto r, GetRange(*impl_->index, kind, digest));
    if (r) out.push_back(InodeRange{.kind = kind, .digest = digest, .first = r->first, .count = r->count});
  }
  return out;
}

Result<std::optional<InodeRange>> Store::InodeOwner(std::uint64_t ino) const {
  std::optional<InodeRange> out;
  std::optional<Error> err;
  DIGESTD_RETURN_IF_ERROR(impl_->index->Scan(
      Cf::kMeta, EndKey(ino), [&](std::string_view k, std::string_view v) {
        if (k.substr(0, kEndPrefix.size()) != kEndPrefix) return false;
        std::vector<std::string_view> f;
        std::uint64_t kind = 0, first = 0, count = 0;
        auto digest = Fields(v, 4, f) ? Digest::Parse(f[1]) : Result<Digest>(Corrupt(k, v));
        if (!digest || !ParseU64(f[0], kind) || kind < 1 || kind > 3 || !ParseU64(f[2], first) ||
            !ParseU64(f[3], count) || count == 0) {
          err = Corrupt(k, v);
          return false;
        }
        const InodeRange r{
            .kind = static_cast<InodeKind>(kind), .digest = *digest, .first = first, .count = count};
        if (ino >= r.first && ino - r.first < r.count) out = r;
        return false;
      }));
  if (err) {
    impl_->counters.corrupt_records.fetch_add(1, std::memory_order_relaxed);
    return *err;
  }
  return out;
}

}  // namespace digestd::store
