#include "snapshotter/content_seed.h"
#include "snapshotter/errors.h"

#include <unistd.h>

#include <ctime>
#include <random>

#include <grpcpp/grpcpp.h>

#include "common/log.h"

#include "github.com/containerd/containerd/api/services/content/v1/content.grpc.pb.h"
#include "github.com/containerd/containerd/api/services/leases/v1/leases.grpc.pb.h"

namespace digestd::snapshotter {
namespace {

namespace content = containerd::services::content::v1;
namespace leases = containerd::services::leases::v1;

constexpr std::size_t kChunk = 1u << 20;

Error FromStatus(const grpc::Status& s, const std::string& what) {
  return SnapshotterError(Errc::kIo, "containerd content: " + what + ": " + s.error_message());
}

std::string RandomSuffix() {
  static thread_local std::mt19937_64 rng{std::random_device{}()};
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(rng()));
  return buf;
}

std::string Rfc3339(std::chrono::system_clock::time_point t) {
  const std::time_t secs = std::chrono::system_clock::to_time_t(t);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[32];
  std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%SZ", &tm);
  return buf;
}

class Seeder {
 public:
  Seeder(std::shared_ptr<grpc::Channel> channel, const SeedOptions& opts)
      : content_(content::Content::NewStub(channel)),
        leases_(leases::Leases::NewStub(channel)),
        opts_(opts),
        deadline_(std::chrono::system_clock::now() + opts.timeout) {}

  void Prepare(grpc::ClientContext& ctx) const {
    ctx.AddMetadata("containerd-namespace", opts_.ns);
    if (!lease_.empty()) ctx.AddMetadata("containerd-lease", lease_);
    ctx.set_deadline(deadline_);
  }

  Result<void> CreateLease() {
    leases::CreateRequest req;
    req.set_id("digestd-seed-" + RandomSuffix());
    (*req.mutable_labels())["containerd.io/gc.expire"] =
        Rfc3339(std::chrono::system_clock::now() + opts_.hold);
    (*req.mutable_labels())["org.digestd.seed"] = "true";
    leases::CreateResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx);
    if (auto s = leases_->Create(&ctx, req, &resp); !s.ok()) return FromStatus(s, "create lease");
    lease_ = req.id();
    return {};
  }

  Result<bool> Present(const verify::Digest& d) {
    content::InfoRequest req;
    req.set_digest(d.ToString());
    content::InfoResponse resp;
    grpc::ClientContext ctx;
    Prepare(ctx);
    const auto s = content_->Info(&ctx, req, &resp);
    if (s.ok()) return true;
    if (s.error_code() == grpc::StatusCode::NOT_FOUND) return false;
    return FromStatus(s, "info " + d.ToString());
  }

  // The client side of containerd's Write stream: WRITE chunks at their offsets, then COMMIT
  // with the expected digest and size; one response per request.
  Result<void> Write(const verify::Digest& d, int fd, std::uint64_t size) {
    grpc::ClientContext ctx;
    Prepare(ctx);
    auto stream = content_->Write(&ctx);
    const std::string ref = "digestd-" + std::string(d.hex()) + "-" + RandomSuffix();
    std::string buf(kChunk, '\0');
    content::WriteContentResponse resp;
    auto exchange = [&](const content::WriteContentRequest& req) -> bool {
      return stream->Write(req) && stream->Read(&resp);
    };
    std::uint64_t off = 0;
    bool ok = true;
    do {
      const std::size_t want = static_cast<std::size_t>(std::min<std::uint64_t>(kChunk, size - off));
      std::size_t got = 0;
      while (got < want) {
        const ssize_t n = ::pread(fd, buf.data() + got, want - got, static_cast<off_t>(off + got));
        if (n < 0 && errno == EINTR) continue;
        if (n <= 0) return SysError(Module::kSnapshotter, "read blob " + d.ToString());
        got += static_cast<std::size_t>(n);
      }
      content::WriteContentRequest req;
      const bool last = off + want == size;
      req.set_action(last ? content::COMMIT : content::WRITE);
      req.set_ref(ref);
      req.set_total(static_cast<std::int64_t>(size));
      req.set_expected(d.ToString());
      req.set_offset(static_cast<std::int64_t>(off));
      req.set_data(buf.data(), want);
      ok = exchange(req);
      off += want;
    } while (ok && off < size);
    if (ok) ok = stream->WritesDone();
    // containerd sends the commit response once more as the stream ends; Finish() waits until
    // every message is read, so drain them.
    for (content::WriteContentResponse extra; stream->Read(&extra);) {
    }
    const grpc::Status s = stream->Finish();
    if (s.error_code() == grpc::StatusCode::ALREADY_EXISTS) return {};  // someone was faster
    if (!s.ok()) return FromStatus(s, "write " + d.ToString());
    if (!ok || resp.action() != content::COMMIT) {
      return SnapshotterError(Errc::kIo, "containerd content: write " + d.ToString() + ": containerd did not commit it");
    }
    return {};
  }

 private:
  std::unique_ptr<content::Content::Stub> content_;
  std::unique_ptr<leases::Leases::Stub> leases_;
  const SeedOptions& opts_;
  std::chrono::system_clock::time_point deadline_;
  std::string lease_;
};

}  // namespace


Result<SeedReport> SeedContainerdContent(const store::Store& store,
                                         const std::vector<verify::Digest>& blobs,
                                         const SeedOptions& opts) {
  if (!ValidContainerdNamespace(opts.ns)) {
    return SnapshotterError(Errc::kInvalidArgument, "containerd content: bad namespace \"" + opts.ns + "\"");
  }
  auto channel = grpc::CreateChannel("unix://" + opts.containerd_socket.string(),
                                     grpc::InsecureChannelCredentials());
  Seeder seeder(channel, opts);
  SeedReport report;
  bool leased = false;
  for (const auto& d : blobs) {
    DIGESTD_ASSIGN_OR_RETURN(bool present, seeder.Present(d));
    if (present) {
      ++report.present;
      continue;
    }
    if (!leased) {
      DIGESTD_RETURN_IF_ERROR(seeder.CreateLease());
      leased = true;
    }
    DIGESTD_ASSIGN_OR_RETURN(auto info, store.Stat(d));
    DIGESTD_ASSIGN_OR_RETURN(UniqueFd fd, store.OpenBlob(d));
    DIGESTD_RETURN_IF_ERROR(seeder.Write(d, fd.Get(), info.size));
    ++report.written;
    report.bytes += info.size;
  }
  return report;
}


Result<void> HandOffToContainerd(const store::Store& store, const PulledImage& image,
                                 const HandOffOptions& opts, bool* skipped) {
  auto log = Logger(Module::kSnapshotter);
  if (skipped) *skipped = !image.tenant.empty();
  if (!image.tenant.empty()) {
    log->info("containerd content: {} not handed over (tenant {}: wiped with its lease)",
              image.manifest.ToString(), image.tenant);
    return {};
  }
  std::vector<verify::Digest> blobs = {image.manifest};
  if (image.image_manifest != image.manifest) blobs.push_back(image.image_manifest);
  blobs.push_back(image.config);
  blobs.insert(blobs.end(), image.layers.begin(), image.layers.end());
  for (const auto& ns : opts.namespaces) {
    auto seeded = SeedContainerdContent(
        store, blobs, {.containerd_socket = opts.containerd_socket, .ns = ns, .hold = opts.hold});
    if (!seeded) return std::move(seeded).error().Wrap("namespace " + ns);
    log->info("containerd content: {} in namespace {}: {} blobs written ({} bytes), {} present",
              image.manifest.ToString(), ns, seeded->written, seeded->bytes, seeded->present);
  }
  return {};
}

}  // namespace digestd::snapshotter
