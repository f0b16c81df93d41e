#include "snapshotter/grpc_server.h"
#include "snapshotter/errors.h"

#include "common/metrics.h"

#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <thread>

#include <grpcpp/grpcpp.h>
#include <grpcpp/server_posix.h>

#include "common/unique_fd.h"
#include "common/fd_budget.h"
#include "common/log.h"
#include "common/unix_socket.h"
#include "github.com/containerd/containerd/api/services/snapshots/v1/snapshots.grpc.pb.h"

namespace digestd::snapshotter {
namespace {

namespace pb = containerd::services::snapshots::v1;

grpc::Status ToStatus(const Error& e) {
  grpc::StatusCode code = grpc::StatusCode::INTERNAL;
  switch (e.code()) {
    case Errc::kNotFound: code = grpc::StatusCode::NOT_FOUND; break;
    case Errc::kAlreadyExists: code = grpc::StatusCode::ALREADY_EXISTS; break;
    case Errc::kInvalidArgument: code = grpc::StatusCode::INVALID_ARGUMENT; break;
    case Errc::kPermission:
    case Errc::kBusy: code = grpc::StatusCode::FAILED_PRECONDITION; break;
    case Errc::kUnsupported: code = grpc::StatusCode::UNIMPLEMENTED; break;
    default: break;
  }
  return grpc::Status(code, e.context());
}

std::map<std::string, std::string> Labels(const google::protobuf::Map<std::string, std::string>& m) {
  return std::map<std::string, std::string>(m.begin(), m.end());
}

void SetMounts(const std::vector<Mount>& in, google::protobuf::RepeatedPtrField<containerd::types::Mount>* out) {
  for (const auto& m : in) {
    auto* pm = out->Add();
    pm->set_type(m.type);
    pm->set_source(m.source);
    for (const auto& o : m.options) pm->add_options(o);
  }
}

void SetTime(std::int64_t ns, google::protobuf::Timestamp* t) {
  t->set_seconds(ns / 1'000'000'000);
  t->set_nanos(static_cast<int>(ns % 1'000'000'000));
}

void SetInfo(const Info& in, pb::Info* out) {
  out->set_name(in.name);
  out->set_parent(in.parent);
  out->set_kind(static_cast<pb::Kind>(static_cast<int>(in.kind)));
  SetTime(in.created_ns, out->mutable_created_at());
  SetTime(in.updated_ns, out->mutable_updated_at());
  for (const auto& [k, v] : in.labels) (*out->mutable_labels())[k] = v;
}

class Service final : public pb::Snapshots::Service {
 public:
  Service(Snapshots& s, std::function<void(const std::string&)> report)
      : s_(s), report_(std::move(report)) {}

  grpc::Status Prepare(grpc::ServerContext*, const pb::PrepareSnapshotRequest* req,
                       pb::PrepareSnapshotResponse* resp) override {
    auto m = s_.Prepare(req->key(), req->parent(), Labels(req->labels()));
    if (!m) return Fail("prepare " + req->key(), m.error());
    SetMounts(*m, resp->mutable_mounts());
    return grpc::Status::OK;
  }
  grpc::Status View(grpc::ServerContext*, const pb::ViewSnapshotRequest* req,
                    pb::ViewSnapshotResponse* resp) override {
    auto m = s_.View(req->key(), req->parent(), Labels(req->labels()));
    if (!m) return Fail("view " + req->key(), m.error());
    SetMounts(*m, resp->mutable_mounts());
    return grpc::Status::OK;
  }
  grpc::Status Mounts(grpc::ServerContext*, const pb::MountsRequest* req,
                      pb::MountsResponse* resp) override {
    auto m = s_.Mounts(req->key());
    if (!m) return Fail("mounts " + req->key(), m.error());
    SetMounts(*m, resp->mutable_mounts());
    return grpc::Status::OK;
  }
  grpc::Status Commit(grpc::ServerContext*, const pb::CommitSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    auto r = s_.Commit(req->name(), req->key(), Labels(req->labels()));
    if (!r) return Fail("commit " + req->key(), r.error());
    return grpc::Status::OK;
  }
  grpc::Status Remove(grpc::ServerContext*, const pb::RemoveSnapshotRequest* req,
                      google::protobuf::Empty*) override {
    auto r = s_.Remove(req->key());
    if (!r) return Fail("remove " + req->key(), r.error());
    return grpc::Status::OK;
  }
  grpc::Status Stat(grpc::ServerContext*, const pb::StatSnapshotRequest* req,
                    pb::StatSnapshotResponse* resp) override {
    auto i = s_.Stat(req->key());
    if (!i) return ToStatus(i.error());  // NotFound is routine: containerd probes with Stat
    SetInfo(*i, resp->mutable_info());
    return grpc::Status::OK;
  }
  grpc::Status Update(grpc::ServerContext*, const pb::UpdateSnapshotRequest* req,
                      pb::UpdateSnapshotResponse* resp) override {
    Info in;
    in.name = req->info().name();
    in.labels = Labels(req->info().labels());
    std::vector<std::string> paths(req->update_mask().paths().begin(),
                                   req->update_mask().paths().end());
    auto i = s_.Update(in, paths);
    if (!i) return Fail("update " + in.name, i.error());
    SetInfo(*i, resp->mutable_info());
    return grpc::Status::OK;
  }
  grpc::Status List(grpc::ServerContext*, const pb::ListSnapshotsRequest*,
                    grpc::ServerWriter<pb::ListSnapshotsResponse>* writer) override {
    // Filters are not applied here: containerd's clients re-check what they asked for (its
    // metadata store does), so the full list is correct, just not minimal.
    auto all = s_.List();
    if (!all) return Fail("list", all.error());
    pb::ListSnapshotsResponse resp;
    for (const auto& i : *all) {
      SetInfo(i, resp.add_info());
      if (resp.info_size() == 100) {
        writer->Write(resp);
        resp.clear_info();
      }
    }
    if (resp.info_size() > 0) writer->Write(resp);
    return grpc::Status::OK;
  }
  grpc::Status Usage(grpc::ServerContext*, const pb::UsageRequest* req,
                     pb::UsageResponse* resp) override {
    auto u = s_.DiskUsage(req->key());
    if (!u) return Fail("usage " + req->key(), u.error());
    resp->set_size(u->size);
    resp->set_inodes(u->inodes);
    return grpc::Status::OK;
  }
  grpc::Status Cleanup(grpc::ServerContext*, const pb::CleanupRequest*,
                       google::protobuf::Empty*) override {
    auto r = s_.Cleanup();
    if (!r) return Fail("cleanup", r.error());
    return grpc::Status::OK;
  }

 private:
  grpc::Status Fail(const std::string& what, const Error& e) {
    if (report_ && e.code() != Errc::kAlreadyExists) report_(what + ": " + e.context());
    return ToStatus(e);
  }
  Snapshots& s_;
  std::function<void(const std::string&)> report_;
};

}  // namespace

struct GrpcServer::Impl {
  GrpcServerOptions opts;
  std::unique_ptr<Service> service;
  std::unique_ptr<grpc::Server> server;
  UniqueFd listener;
  std::thread acceptor;
  std::atomic<bool> stopping{false};
  bool inherited = false;  // the listener came from the service manager

  AcceptBackoff backoff{Logger(Module::kSnapshotter), "snapshotter socket"};

  void AcceptLoop() {
    while (!stopping.load()) {
      // Woken at least every 200 ms to see `stopping` (an inherited listener is never shut down).
      pollfd p{.fd = listener.Get(), .events = POLLIN, .revents = 0};
      if (::poll(&p, 1, 200) <= 0) continue;
      // gRPC polls the connection itself: it must be non-blocking.
      const int fd = ::accept4(listener.Get(), nullptr, nullptr, SOCK_CLOEXEC | SOCK_NONBLOCK);
      if (fd < 0) {
        const int err = errno;
        if (stopping.load()) break;  // Stop() shut the listener down
        if (err == EINTR || err == ECONNABORTED || err == EAGAIN) continue;
        // Out of fds (a client holding many connections, or reads through the mount): the
        // connection stays queued; wait instead of spinning, and never give up serving.
        std::this_thread::sleep_for(AcceptBackoff::IsShortage(err)
                                        ? backoff.OnShortage(err)
                                        : std::chrono::milliseconds(100));
        continue;
      }
      backoff.OnSuccess();
      ucred cred{};
      socklen_t len = sizeof cred;
      const bool known = getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) == 0;
      if (!known || !opts.authorize || !opts.authorize(cred.uid, cred.gid)) {
        if (opts.on_refusal) {
          opts.on_refusal("snapshotter socket: peer uid " + std::to_string(cred.uid) + " gid " +
                          std::to_string(cred.gid) + " pid " + std::to_string(cred.pid) +
                          " refused");
        }
        ::close(fd);
        continue;
      }
      grpc::AddInsecureChannelFromFd(server.get(), fd);  // gRPC owns fd from here
    }
  }
};

GrpcServer::GrpcServer(std::unique_ptr<Impl> impl) : impl_(std::move(impl)) {}
GrpcServer::~GrpcServer() { Stop(); }

Result<std::unique_ptr<GrpcServer>> GrpcServer::Start(Snapshots& snapshots,
                                                      GrpcServerOptions options) {
  auto impl = std::make_unique<Impl>();
  impl->opts = std::move(options);
  impl->inherited = static_cast<bool>(impl->opts.listener);
  if (impl->inherited) {
    impl->listener = std::move(impl->opts.listener);
  } else {
    DIGESTD_ASSIGN_OR_RETURN(
        UniqueFd fd, ListenUnixSocket(impl->opts.socket, impl->opts.mode, impl->opts.group,
                                      Module::kSnapshotter));
    impl->listener = std::move(fd);
  }
  impl->service = std::make_unique<Service>(snapshots, impl->opts.on_refusal);
  grpc::ServerBuilder builder;
  builder.RegisterService(impl->service.get());
  builder.SetMaxReceiveMessageSize(4 << 20);
  impl->server = builder.BuildAndStart();
  if (!impl->server) {
    return SnapshotterError(Errc::kInternal, "gRPC server did not start");
  }
  impl->acceptor = std::thread([p = impl.get()] { p->AcceptLoop(); });
  return std::unique_ptr<GrpcServer>(new GrpcServer(std::move(impl)));
}

std::uint64_t GrpcServer::accept_failures() const { return impl_->backoff.failures(); }

void GrpcServer::Stop() {
  if (!impl_ || impl_->stopping.exchange(true)) return;
  // shutdown() wakes the accept loop; on a socket the service manager shares with us it would
  // also end the manager's copy, so there the loop is woken by the flag it polls instead.
  if (!impl_->inherited) ::shutdown(impl_->listener.Get(), SHUT_RDWR);
  if (impl_->acceptor.joinable()) impl_->acceptor.join();
  impl_->server->Shutdown(std::chrono::system_clock::now() + std::chrono::seconds(2));
  if (!impl_->inherited) ::unlink(impl_->opts.socket.c_str());
}

void GrpcServer::RegisterMetrics(metrics::Registry& registry) const {
  registry.Add({"digestd_accept_backoffs_total",
                "accept() failures from fd or memory shortage, each backed off (never fatal).",
                metrics::Kind::kCounter},
               [this] { return accept_failures(); }, metrics::Label("socket", "snapshotter"));
}

Result<SnapshotterService> StartService(store::Store& store, SnapshotsOptions snapshots,
                             GrpcServerOptions server) {
  SnapshotterService s;
  DIGESTD_ASSIGN_OR_RETURN(s.snapshots, Snapshots::Open(store, std::move(snapshots)));
  DIGESTD_ASSIGN_OR_RETURN(s.server, GrpcServer::Start(*s.snapshots, std::move(server)));
  return s;
}

}  // namespace digestd::snapshotter
