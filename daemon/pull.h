#pragma once

// The verified pull pipeline, in DESIGN.md's order:
//   parse the reference -> policy pre-check -> resolve the tag at the origin -> manifest
//   (size-capped, digest computed) -> signatures (sha256-<hex>.sig, .att and OCI referrers) and
//   the policy decision, before any layer is fetched -> index -> platform manifest -> config and
//   layers concurrently, streamed, verified (digest, size, diff_id) and unpacked into one image
//   transaction (store/image_txn.h) -> manifests, edges, trees, reference and image record
//   committed as one durable step.
// Every decision and failure is an audit event. A failed pull leaves no image and nothing it
// alone staged; a kill at any point leaves the image whole or absent.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/error.h"
#include "daemon/config.h"
#include "daemon/pull_types.h"
#include "daemon/registry_client.h"
#include "store/store.h"
#include "verify/policy.h"
#include "verify/policy_set.h"
#include "verify/reference.h"
#include "daemon/auditor.h"
#include "common/metrics.h"

namespace digestd::daemon {

class Puller {
 public:
  // `blocking`: the daemon's blocking executor (daemon/blocking.h), for staging, unpacking and
  // the commit. `auditor`: where the pull's events go (null: an Auditor of the puller's own on
  // the same store, for tools and tests that run a pull alone).
  Puller(asio::io_context& io, asio::thread_pool& blocking, store::Store& store,
         verify::PolicySet& policies, const Config& config, RegistryClient& registry,
         Auditor* auditor = nullptr);

  asio::awaitable<Result<PullResult>> Pull(std::string_view reference, PullOptions options);
  // The same pull from another thread (the snapshotter's gRPC threads pull on demand): runs on
  // the io thread, calls `after` there once it committed, and blocks the caller until then.
  // Refused on the io thread itself (daemon/blocking.h, RunOnIo).
  Result<void> PullAndWait(std::string reference, PullOptions options, std::function<void()> after);

  // Runs on the blocking pool after every successful pull, before Pull() returns (the daemon
  // hands the image to containerd's content store with it). A failure is logged and audited as
  // `pull.handoff.failed`; the pull itself stands.
  using AfterPullFn = std::function<Result<void>(const PullResult&)>;
  void SetAfterPull(AfterPullFn fn) { after_pull_ = std::move(fn); }
  // After-pull hand-offs that failed (read on the io thread, like every Pull()).
  std::uint64_t handoff_failures() const { return handoff_failures_; }
  // digestd_handoff_failures_total.
  void RegisterMetrics(metrics::Registry& registry) const;

 private:
  asio::awaitable<Result<verify::Evidence>> FetchEvidence(const verify::Reference& ref,
                                                          const verify::Digest& digest);
  void Audit(std::string_view type, const PullOptions& opts, std::string_view reference,
             std::string_view digest, const verify::Decision* decision, std::string_view reason);

  asio::io_context& io_;
  asio::thread_pool& blocking_;
  store::Store& store_;
  verify::PolicySet& policies_;
  const Config& config_;
  RegistryClient& registry_;
  std::unique_ptr<Auditor> own_auditor_;
  Auditor& auditor_;
  AfterPullFn after_pull_;
  std::uint64_t handoff_failures_ = 0;
};

}  // namespace digestd::daemon
