#include "daemon/pull.h"
#include "daemon/errors.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <chrono>
#include <nlohmann/json.hpp>
#include <random>
#include <set>

#include "common/log.h"
#include "daemon/blocking.h"
#include "daemon/store_sink.h"
#include "store/image_txn.h"
#include "verify/oci.h"

namespace digestd::daemon {
namespace {

using verify::Digest;
using verify::Reference;


using Task = std::function<asio::awaitable<Result<void>>()>;

// Runs tasks with at most `limit` in flight on `io`; the first error stops further starts.
asio::awaitable<Result<void>> RunBounded(asio::io_context& io, std::vector<Task>& tasks,
                                         int limit) {
  struct Shared {
    explicit Shared(asio::io_context& ctx) : done(ctx, asio::steady_timer::time_point::max()) {}
    std::size_t next = 0;
    int running = 0;
    std::optional<Error> error;
    asio::steady_timer done;
  };
  auto shared = std::make_shared<Shared>(io);
  const int workers = std::max(1, std::min<int>(limit, static_cast<int>(tasks.size())));
  shared->running = workers;
  for (int w = 0; w < workers; ++w) {
    asio::co_spawn(
        io,
        [shared, &tasks]() -> asio::awaitable<void> {
          while (!shared->error && shared->next < tasks.size()) {
            const std::size_t i = shared->next++;
            auto r = co_await tasks[i]();
            if (!r && !shared->error) shared->error = r.error();
          }
          if (--shared->running == 0) shared->done.cancel();
        },
        asio::detached);
  }
  // Workers that never suspended may all be done already (every blob was present).
  if (shared->running > 0) {
    boost::system::error_code ec;
    co_await shared->done.async_wait(asio::redirect_error(asio::use_awaitable, ec));
  }
  if (shared->error) co_return *shared->error;
  co_return Result<void>();
}

constexpr std::size_t kMaxSignatureLayers = 32;
constexpr std::size_t kSignatureBlobCap = 1u << 20;

}  // namespace

Puller::Puller(asio::io_context& io, asio::thread_pool& blocking, store::Store& store,
               verify::PolicySet& policies, const Config& config, RegistryClient& registry,
               Auditor* auditor)
    : io_(io),
      blocking_(blocking),
      store_(store),
      policies_(policies),
      config_(config),
      registry_(registry),
      own_auditor_(auditor ? nullptr : std::make_unique<Auditor>(store, config.audit)),
      auditor_(auditor ? *auditor : *own_auditor_) {}

void Puller::RegisterMetrics(metrics::Registry& registry) const {
  registry.Add({"digestd_handoff_failures_total",
                "Pulled images that could not be handed to containerd's content store.",
                metrics::Kind::kCounter},
               [this] { return handoff_failures_; });
}

void Puller::Audit(std::string_view type, const PullOptions& opts, std::string_view reference,
                   std::string_view digest, const verify::Decision* decision,
                   std::string_view reason) {
  store::AuditEvent event{.type = std::string(type),
                          .actor_uid = opts.actor_uid >= 0 ? std::optional<std::int64_t>(opts.actor_uid)
                                                           : std::nullopt,
                          .reference = std::string(reference),
                          .digest = std::string(digest),
                          .tenant = opts.tenant,
                          .reason = std::string(reason)};
  if (decision) {
    event.details = {{"allowed", decision->allowed}, {"scope", decision->scope},
                     {"rule", decision->requirement}, {"signer", decision->signer}};
  }
  auditor_.Record(std::move(event));
}

asio::awaitable<Result<verify::Evidence>> Puller::FetchEvidence(const Reference& ref,
                                                                const Digest& digest) {
  verify::Evidence ev;
  const std::string hex(digest.hex());
  auto add_layers = [&](const verify::ImageManifest& m) -> asio::awaitable<Result<void>> {
    std::size_t n = 0;
    for (const auto& layer : m.layers) {
      if (++n > kMaxSignatureLayers) break;
      const auto size = static_cast<std::uint64_t>(layer.size);
      auto blob = co_await registry_.GetSmallBlob(ref, layer.digest, size, kSignatureBlobCap);
      if (!blob) {
        Logger(Module::kDaemon, "pull")->warn("signature layer {} unavailable: {}", layer.digest.Short(),
                             blob.error().ToString());
        continue;
      }
      if (layer.media_type == verify::media::kSigstoreBundleV03) {
        ev.bundles.push_back(std::move(*blob));
      } else if (layer.media_type == verify::media::kDsseEnvelope) {
        ev.attestations.push_back(std::move(*blob));
      } else {
        ev.signatures.push_back(verify::SimpleSignature{
            .media_type = layer.media_type, .payload = std::move(*blob),
            .annotations = layer.annotations});
      }
    }
    co_return Result<void>();
  };
  // cosign's tag layouts: signatures at sha256-<hex>.sig, attestations at sha256-<hex>.att.
  for (const char* suffix : {".sig", ".att"}) {
    const std::string tag = "sha256-" + hex + suffix;
    auto m = co_await registry_.GetManifest(ref, tag);
    if (!m) {
      if (m.error().code() == Errc::kNotFound) continue;
      co_return m.error();
    }
    auto parsed = verify::ParseImageManifest(m->bytes, m->media_type);
    if (!parsed) {
      Logger(Module::kDaemon, "pull")->warn("ignoring unreadable {} manifest: {}", suffix, parsed.error().ToString());
      continue;
    }
    auto r = co_await add_layers(*parsed);
    if (!r) co_return r.error();
  }
  // OCI referrers (cosign v3 bundles, attestations).
  auto referrers = co_await registry_.GetReferrers(ref, digest);
  if (!referrers) co_return referrers.error();
  if (*referrers) {
    auto idx = verify::ParseImageIndex(**referrers, verify::media::kOciIndex);
    if (idx) {
      std::size_t n = 0;
      for (const auto& d : idx->manifests) {
        if (++n > kMaxSignatureLayers) break;
        const std::string wanted = d.digest.ToString();
        auto m = co_await registry_.GetManifest(ref, wanted);
        if (!m) continue;
        auto parsed = verify::ParseImageManifest(m->bytes, m->media_type);
        if (!parsed || !parsed->subject || parsed->subject->digest != digest) continue;
        auto r = co_await add_layers(*parsed);
        if (!r) co_return r.error();
      }
    }
  }
  co_return ev;
}

namespace {

// A plain coroutine function: GCC 12 copies its parameters into the frame correctly, where
// lambda captures are not.
asio::awaitable<Result<void>> PullThen(Puller* puller, std::string ref, PullOptions options,
                                       std::function<void()> after) {
  auto r = co_await puller->Pull(ref, std::move(options));
  if (!r) co_return r.error();
  if (after) after();
  co_return Result<void>();
}

}  // namespace

Result<void> Puller::PullAndWait(std::string reference, PullOptions options,
                                 std::function<void()> after) {
  return RunOnIo(io_, [this, reference, options, after] {
    return PullThen(this, reference, options, after);
  });
}

asio::awaitable<Result<PullResult>> Puller::Pull(std::string_view text, PullOptions opts) {
  auto emit = [&](PullEvent e) {
    if (opts.on_event) opts.on_event(e);
  };
  auto parsed = Reference::Parse(text);
  if (!parsed) {
    Audit("pull.failed", opts, text, "", nullptr, parsed.error().ToString());
    co_return parsed.error();
  }
  Reference ref = *parsed;
  if (!ref.has_tag() && !ref.has_digest()) ref = *ref.WithTag("latest");
  const std::string ref_text = ref.String();
  const auto snap = policies_.Current();
  if (!snap.policy) co_return DaemonError(Errc::kPermission, "no policy is loaded; refusing to pull");

  auto fail = [&](Error e, std::string_view digest = "") -> Error {
    Audit("pull.failed", opts, ref_text, digest, nullptr, e.ToString());
    return e;
  };

  // 1. Org rules before any network I/O.
  verify::Decision pre = snap.policy->PreCheck(ref);
  if (!pre.allowed) {
    Audit("policy.denied", opts, ref_text, "", &pre, pre.reason);
    emit({.type = "policy", .detail = pre.ToJson()});
    co_return DaemonError(Errc::kPermission, "policy denies " + ref_text + ": " + pre.reason);
  }

  // 2. Resolve at the origin (tags) and fetch the manifest; the digest is the one we compute.
  emit({.type = "resolving", .detail = ref_text});
  // Arguments of a co_await are plain named values: GCC 12 miscompiles ?: and some temporaries
  // inside a co_await expression (it evaluated the wrong branch here).
  const std::string wanted = ref.has_digest() ? ref.digest()->ToString() : ref.tag();
  auto top = co_await registry_.GetManifest(ref, wanted);
  if (!top) co_return fail(std::move(top).error().Wrap("resolve " + ref_text));
  const Digest top_digest = top->digest;
  emit({.type = "resolved", .detail = ref_text, .digest = top_digest.ToString()});
  if (store_.IsDenied(top_digest)) {
    co_return fail(DaemonError(Errc::kPermission, top_digest.ToString() + " is on the deny list"),
                   top_digest.ToString());
  }
  auto kind = verify::DetectManifestKind(top->bytes, top->media_type,
                                         {.max_bytes = config_.manifest_max_bytes});
  if (!kind) co_return fail(kind.error(), top_digest.ToString());

  // 3. Signatures and the decision, before any layer is fetched.
  auto evidence = co_await FetchEvidence(ref, top_digest);
  if (!evidence) co_return fail(std::move(evidence).error().Wrap("signatures"), top_digest.ToString());
  verify::Decision decision =
      snap.policy->Evaluate(ref, top_digest, *evidence, snap.trust.get(), store_.Now());
  Audit(decision.allowed ? "policy.allowed" : "policy.denied", opts, ref_text,
        top_digest.ToString(), &decision, decision.reason);
  emit({.type = "policy", .detail = decision.ToJson(), .digest = top_digest.ToString()});
  if (!decision.allowed) {
    co_return DaemonError(Errc::kPermission, "policy denies " + ref_text + ": " + decision.reason);
  }

  // 4. Index -> the platform's image manifest.
  const verify::ManifestLimits limits{.max_bytes = config_.manifest_max_bytes,
                                      .max_blob_size =
                                          static_cast<std::int64_t>(config_.blob_max_bytes)};
  FetchedManifest image = *top;
  if (verify::IsIndexKind(*kind)) {
    auto idx = verify::ParseImageIndex(top->bytes, top->media_type, limits);
    if (!idx) co_return fail(idx.error(), top_digest.ToString());
    auto desc = verify::SelectPlatform(*idx, config_.platform);
    if (!desc) co_return fail(desc.error(), top_digest.ToString());
    const std::string wanted_image = desc->digest.ToString();
    auto m = co_await registry_.GetManifest(ref, wanted_image);
    if (!m) co_return fail(m.error(), desc->digest.ToString());
    if (static_cast<std::int64_t>(m->bytes.size()) != desc->size) {
      co_return fail(DaemonError(Errc::kSizeMismatch, "manifest " + desc->digest.ToString() +
                                                        " is not the size the index names"));
    }
    if (store_.IsDenied(m->digest)) {
      co_return fail(DaemonError(Errc::kPermission, m->digest.ToString() + " is on the deny list"));
    }
    image = std::move(*m);
  }
  auto manifest = verify::ParseImageManifest(image.bytes, image.media_type, limits);
  if (!manifest) co_return fail(manifest.error(), image.digest.ToString());

  // 5. Everything below belongs to one image transaction: fetched blobs are staged, stored ones
  // held, and nothing is recorded until the single commit at the end. Any failure before it
  // rolls back what this pull alone staged (the transaction's destructor).
  auto begun = store_.BeginImage(opts.tenant);
  if (!begun) co_return fail(begun.error(), top_digest.ToString());
  std::unique_ptr<store::ImageTxn> txn = std::move(*begun);
  auto abort = [&](Error e) -> Error {
    txn.reset();
    return fail(std::move(e), top_digest.ToString());
  };

  std::uint64_t fetched_before = registry_.stats().bytes;
  // Fetches one descriptor into the transaction. A layer (diff_id set) is verified against its
  // diff_id and unpacked while it streams in; nothing stays if either fails.
  const store::UnpackLimits unpack_limits = config_.unpack_limits;
  auto fetch = [this, &ref, &opts, &emit, &unpack_limits, &txn](
                   const verify::Descriptor* d,
                   const std::optional<Digest>& diff_id) -> asio::awaitable<Result<void>> {
    store::IngestOptions ingest{.media_type = d->media_type, .tenant = opts.tenant};
    ingest.diff_id = diff_id;
    if (diff_id) ingest.unpack = unpack_limits;
    const auto size = static_cast<std::uint64_t>(d->size);
    const ProgressFn progress = [&emit, size](const Digest& digest, std::uint64_t received) {
      emit({.type = "blob", .digest = digest.ToString(), .bytes = received, .total = size});
    };
    StoreBlobSink sink(io_, blocking_, *txn, d->digest, size, std::move(ingest));
    auto r = co_await registry_.FetchBlob(ref, d->digest, size, sink, progress);
    if (!r) co_return std::move(r).error().Wrap("blob " + d->digest.ToString());
    co_return Result<void>();
  };

  // The config first: its diff_ids say what each layer must uncompress to.
  const verify::Descriptor* config_desc = &manifest->config;
  const std::optional<Digest> no_diff_id;
  if (auto r = co_await fetch(config_desc, no_diff_id); !r) co_return abort(r.error());
  auto config_bytes = txn->ReadBlob(manifest->config.digest, limits.max_bytes);
  if (!config_bytes) co_return abort(config_bytes.error());
  auto config = verify::ParseImageConfig(*config_bytes, limits);
  if (!config) co_return abort(config.error());
  if (config->diff_ids.size() != manifest->layers.size()) {
    co_return abort(DaemonError(Errc::kCorrupt,
                              "config lists " + std::to_string(config->diff_ids.size()) +
                                  " diff_ids for " + std::to_string(manifest->layers.size()) +
                                  " layers"));
  }

  // 6. Layers concurrently, each verified against its diff_id and unpacked as it streams in; a
  // layer held already (stored, or staged by another pull) is checked against this config's
  // diff_id through its tree, or unpacked here.
  std::vector<Task> tasks;
  for (std::size_t i = 0; i < manifest->layers.size(); ++i) {
    tasks.push_back([this, i, &fetch, &manifest, &config, &unpack_limits,
                     &txn]() -> asio::awaitable<Result<void>> {
      const verify::Descriptor* layer = &manifest->layers[i];
      const Digest want = config->diff_ids[i];
      const std::optional<Digest> diff_id = want;
      if (auto r = co_await fetch(layer, diff_id); !r) co_return r.error();
      store::ImageTxn* t = txn.get();
      const store::UnpackLimits layer_limits = unpack_limits;
      const BlockingFn ensure = [t, layer, want, layer_limits]() -> Result<void> {
        return t->EnsureTree(layer->digest, want, layer->media_type, layer_limits);
      };
      if (auto bad = co_await OffThread(blocking_, ensure)) co_return *bad;
      co_return Result<void>();
    });
  }
  if (auto r = co_await RunBounded(io_, tasks, config_.layer_concurrency); !r) {
    co_return abort(r.error());
  }

  // 7. Manifests with their edges, the reference and the image record: one commit.
  std::vector<Digest> children = {manifest->config.digest};
  for (const auto& l : manifest->layers) children.push_back(l.digest);
  if (auto r = txn->AddBlob(image.digest, image.bytes, manifest->media_type, children); !r) {
    co_return abort(r.error());
  }
  if (image.digest != top_digest) {
    if (auto r = txn->AddBlob(top_digest, top->bytes,
                              verify::IsIndexKind(*kind) ? top->media_type : "", {image.digest});
        !r) {
      co_return abort(r.error());
    }
  }
  {
    const store::ImageCommit commit{
        .reference = ref_text,
        .record = store::ImageRecord{.manifest = top_digest,
                                     .image_manifest = image.digest,
                                     .reference = ref_text,
                                     .scope = decision.scope,
                                     .requirement = decision.requirement,
                                     .signer = decision.signer,
                                     .reason = decision.reason,
                                     .tenant = opts.tenant,
                                     .actor_uid = opts.actor_uid,
                                     .pulled_at = store_.Now()}};
    store::ImageTxn* t = txn.get();
    const store::ImageCommit* c = &commit;
    const BlockingFn commit_image = [t, c]() -> Result<void> { return t->Commit(*c); };
    if (auto err = co_await OffThread(blocking_, commit_image)) co_return abort(*err);
  }
  // Keep the cache under its quota. The transaction still holds this image, so it is never the
  // one evicted to make room for itself.
  store::Store* store = &store_;
  const BlockingFn enforce = [store]() -> Result<void> {
    auto q = store->EnforceQuota();
    if (!q) return q.error();
    return {};
  };
  if (auto err = co_await OffThread(blocking_, enforce)) {
    Logger(Module::kDaemon, "pull")->warn("quota enforcement failed: {}", err->ToString());
  }
  txn.reset();

  PullResult result{.reference = ref,
                    .manifest = top_digest,
                    .image_manifest = image.digest,
                    .config = manifest->config.digest,
                    .decision = decision,
                    .bytes_fetched = registry_.stats().bytes - fetched_before,
                    .tenant = opts.tenant};
  for (const auto& l : manifest->layers) result.layers.push_back(l.digest);
  Audit("pulled", opts, ref_text, top_digest.ToString(), &decision,
        "pulled " + std::to_string(manifest->layers.size()) + " layers");
  if (after_pull_) {
    const AfterPullFn* hook = &after_pull_;
    const PullResult* pulled = &result;
    const BlockingFn after = [hook, pulled]() -> Result<void> { return (*hook)(*pulled); };
    if (auto err = co_await OffThread(blocking_, after)) {
      ++handoff_failures_;
      Logger(Module::kDaemon, "pull")->warn("after pull of {}: {}", ref_text, err->ToString());
      Audit("pull.handoff.failed", opts, ref_text, top_digest.ToString(), nullptr, err->context());
    }
  }
  emit({.type = "committed", .detail = ref_text, .digest = top_digest.ToString()});
  co_return result;
}

}  // namespace digestd::daemon
