// Online scrub: the fsck re-hash, a slice at a time, while the store serves.
//
// A pass walks blob records in digest order, then file objects in digest order; the position is
// kept in the index (meta "scrub_cursor": "b <digest>" or "f <digest>"), so calls and restarts
// resume where the last one stopped. Each object is checked under the maintenance lock held
// shared (removers wait for one object at most); hashing is paced to the configured rate.

#include <fcntl.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <thread>

#include "store/fs_util.h"
#include "store/records.h"
#include "store/store_impl.h"

namespace digestd::store {
namespace {

constexpr std::string_view kCursorKey = "scrub_cursor";

std::string Hex2(unsigned i) {
  static constexpr char kHex[] = "0123456789abcdef";
  return std::string{kHex[i >> 4], kHex[i & 0xf]};
}

}  // namespace

Result<ScrubReport> Store::Scrub(const ScrubOptions& options) {
  auto& impl = *impl_;
  ScrubReport report;
  std::string cursor;
  if (!options.restart) {
    DIGESTD_ASSIGN_OR_RETURN(auto saved, impl.index->Get(Cf::kMeta, kCursorKey));
    if (saved) cursor = *saved;
  }
  // A cursor that does not parse restarts the pass (it is only a position).
  char phase = 'b';
  std::optional<Digest> after;
  if (cursor.size() > 2 && (cursor[0] == 'b' || cursor[0] == 'f') && cursor[1] == ' ') {
    if (auto d = Digest::Parse(std::string_view(cursor).substr(2))) {
      phase = cursor[0];
      after = *d;
    }
  }
  const auto start = std::chrono::steady_clock::now();
  auto pace = [&] {
    if (options.rate_bytes_per_s == 0) return;
    const double due = static_cast<double>(report.bytes_hashed) /
                       static_cast<double>(options.rate_bytes_per_s);
    const auto elapsed = std::chrono::duration<double>(std::chrono::steady_clock::now() - start);
    if (due > elapsed.count()) {
      std::this_thread::sleep_for(std::chrono::duration<double>(due - elapsed.count()));
    }
  };
  auto budget_left = [&] {
    return options.max_bytes == 0 || report.bytes_hashed < options.max_bytes;
  };
  auto problem = [&](std::string what, std::string detail, bool repaired) {
    impl.counters.scrub_problems.fetch_add(1, std::memory_order_relaxed);
    impl.log->warn("scrub {}: {}{}", what, detail, repaired ? " (repaired)" : "");
    report.problems.push_back(FsckProblem{std::move(what), std::move(detail), repaired});
  };
  auto save = [&](std::string value) -> Result<void> {
    Index::Batch batch;
    batch.Put(Cf::kMeta, kCursorKey, value);
    report.resume_at = std::move(value);
    return impl.index->Write(batch, /*sync=*/false);
  };
  RemovalNotice notice(impl);

  if (phase == 'b') {
    for (;;) {
      if (!budget_left()) return report;
      // The next blob record after the cursor.
      std::optional<BlobInfo> next;
      const std::string from = after ? after->ToString() : std::string();
      DIGESTD_RETURN_IF_ERROR(impl.index->Scan(Cf::kBlobs, from, [&](std::string_view k,
                                                                     std::string_view v) {
        if (after && k == from) return true;
        auto info = DecodeBlob(k, v);
        if (!info) return true;  // fsck's and recovery's to report
        next = std::move(*info);
        return false;
      }));
      if (!next) break;
      after = next->digest;
      {
        std::shared_lock maint(impl.maint_mu);
        auto shard = OpenBeneath(impl.blobs_fd.Get(), Impl::ShardPath(next->digest),
                                 O_RDONLY | O_DIRECTORY);
        const std::string hex(next->digest.hex());
        std::uint64_t hashed = 0;
        Result<void> ok = shard ? impl.VerifyFile(shard->Get(), hex, next->digest, next->size,
                                                  &hashed)
                                : Result<void>(shard.error());
        report.bytes_hashed += hashed;
        impl.counters.scrub_bytes.fetch_add(hashed, std::memory_order_relaxed);
        ++report.blobs_checked;
        if (!ok && impl.GetBlobRecord(next->digest).value_or(std::nullopt)) {
          maint.unlock();
          impl.AuditInternal("store.scrub.corrupt", next->digest.ToString(), ok.error().context());
          if (options.repair) {
            std::unique_lock excl(impl.maint_mu);
            DIGESTD_RETURN_IF_ERROR(impl.RemoveBlobUnlocked(next->digest, next->size));
          }
          problem("blob-mismatch", ok.error().ToString(), options.repair);
        }
      }
      DIGESTD_RETURN_IF_ERROR(save("b " + next->digest.ToString()));
      pace();
    }
    phase = 'f';
    after.reset();
  }

  // File objects, shard by shard, each shard's names sorted.
  const std::string alg = "sha256";
  const unsigned first_shard = after ? std::stoul(std::string(after->hex().substr(0, 2)), nullptr, 16) : 0;
  for (unsigned i = first_shard; i < 256; ++i) {
    const std::string shard_name = alg + "/" + Hex2(i);
    auto shard = OpenBeneath(impl.files_fd.Get(), shard_name, O_RDONLY | O_DIRECTORY);
    if (!shard) continue;
    std::vector<std::string> names;
    DIGESTD_RETURN_IF_ERROR(ForEachEntry(shard->Get(), [&](std::string_view name, unsigned char) {
      names.emplace_back(name);
      return Result<void>();
    }));
    std::sort(names.begin(), names.end());
    for (const auto& name : names) {
      auto d = Digest::FromParts(verify::DigestAlgorithm::kSha256, name);
      if (!d || (after && !(*after < *d))) continue;
      if (!budget_left()) return report;
      std::shared_lock maint(impl.maint_mu);
      std::uint64_t hashed = 0;
      auto ok = impl.VerifyFile(shard->Get(), name, *d, std::nullopt, &hashed);
      report.bytes_hashed += hashed;
      impl.counters.scrub_bytes.fetch_add(hashed, std::memory_order_relaxed);
      ++report.files_checked;
      if (!ok && ok.error().sys_errno() != ENOENT) {
        maint.unlock();
        impl.AuditInternal("store.scrub.corrupt", d->ToString(), ok.error().context());
        if (options.repair) {
          std::unique_lock excl(impl.maint_mu);
          DIGESTD_ASSIGN_OR_RETURN(auto layers, impl.RemoveLayersUsing(*d));
          (void)::unlinkat(shard->Get(), name.c_str(), 0);
          std::lock_guard lock(impl.mu);
          impl.usage.files -= std::min<std::uint64_t>(impl.usage.files, 1);
        }
        problem("file-object-mismatch", "file object " + ok.error().context(), options.repair);
      } else {
        maint.unlock();
      }
      DIGESTD_RETURN_IF_ERROR(save("f " + d->ToString()));
      pace();
    }
  }
  report.pass_complete = true;
  impl.counters.scrub_passes.fetch_add(1, std::memory_order_relaxed);
  DIGESTD_RETURN_IF_ERROR(save(""));
  impl.log->info("scrub pass complete: blobs={} files={} bytes={} problems={}",
                 report.blobs_checked, report.files_checked, report.bytes_hashed,
                 report.problems.size());
  return report;
}

}  // namespace digestd::store
