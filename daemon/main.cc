// digestd: the host daemon. main() builds the parts and connects them, nothing else:
//   config -> io_uring check -> policy and trust -> (a predecessor's release) -> store ->
//   re-evaluation of cached images -> FUSE mount -> pull pipeline -> control socket ->
//   snapshotter -> READY=1 -> serve; daemon/lifecycle.h handles the signals and the stop.

#include <spdlog/spdlog.h>
#include <unistd.h>

#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <cstdio>

#include "common/fd_budget.h"
#include "common/log.h"
#include "common/metrics.h"
#include "common/service_manager.h"
#include "daemon/auditor.h"
#include "daemon/blocking.h"
#include "daemon/config.h"
#include "daemon/control_server.h"
#include "daemon/io_uring_check.h"
#include "daemon/lifecycle.h"
#include "daemon/live_restart.h"
#include "daemon/pull.h"
#include "daemon/registry_client.h"
#include "daemon/revalidate.h"
#include "snapshotter/content_seed.h"
#include "snapshotter/grpc_server.h"

#ifndef DIGESTD_BUILD_TAG
#define DIGESTD_BUILD_TAG "release"  // digestd-next (tests) is built with another tag
#endif

using namespace digestd;

namespace {

int Fail(const std::string& what) {
  std::fprintf(stderr, "digestd: %s\n", what.c_str());
  return 1;
}

}  // namespace

int main(int argc, char** argv) {
  auto args = daemon::ParseCommandLine(std::vector<std::string>(argv + 1, argv + argc));
  if (!args) return std::fprintf(stderr, "%s\n", args.error().context().c_str()), 2;
  if (args->version) return std::printf("digestd 0.1 (build %s)\n", DIGESTD_BUILD_TAG), 0;
  auto log = Logger(Module::kDaemon);
  auto config = daemon::LoadConfig(args->config_path);
  if (!config) return Fail(config.error().ToString());
  verify::PolicySet policies(config->policy_path, config->trust_path);
  if (auto r = policies.Reload(); !r) return Fail(r.error().ToString());
  if (args->check_only) {  // config, policy and trust as the daemon would load them
    return std::printf("%s: configuration, policy and trust are valid\n",
                       args->config_path.c_str()),
           0;
  }
  log->info("starting: build={} pid={}", DIGESTD_BUILD_TAG, ::getpid());
  // What the service manager handed over (a live mount's session, socket-unit listeners): taken
  // first, so that no child process ever inherits them.
  daemon::Inherited inherited = daemon::TakeInherited();
  if (auto r = daemon::CheckIoUring(); !r) return Fail(r.error().ToString());
  const std::uint64_t fd_limit = RaiseFdLimit();  // every reader and client costs an fd
  // Started by a running digestd (SIGUSR2): the store and the mount are ours once it releases.
  auto predecessor = daemon::AwaitPredecessor(std::move(inherited.handover));
  if (!predecessor) return Fail(predecessor.error().ToString());
  auto store = store::Store::Open({.root = config->store_root, .quota_bytes = config->quota_bytes});
  if (!store) return Fail(store.error().ToString());
  daemon::Auditor auditor(**store, config->audit);
  daemon::Visibility visibility(**store, policies, auditor);
  visibility.Revalidate();  // before the mount serves anything (an adopted one serves at once)
  auto mount = daemon::MountOrAdopt(
      **store, daemon::MountOptionsFor(*config, fd_limit, visibility, *predecessor),
      std::move(inherited.session), *predecessor && (*predecessor)->serving());
  if (!mount) return Fail(mount.error().ToString());
  if (*predecessor && (*predecessor)->Retire(std::chrono::seconds(10))) (*mount)->Resend();
  fusefs::FuseMount* served = mount->get();
  visibility.Attach([served](const verify::Digest& d) { served->Invalidate(d); },
                    served->adopted());
  // Whatever a removal (GC, quota, wipe) takes away, the mount stops serving at once.
  (*store)->SetRemovalListener([served](const std::vector<verify::Digest>& removed) {
    for (const auto& d : removed) served->Removed(d);
  });

  boost::asio::io_context io;
  boost::asio::thread_pool blocking(4);  // syncs, unpacking, commits, GC, wipes: never the loop
  daemon::RegistryClient registry(io, *config);
  daemon::Puller puller(io, blocking, **store, policies, *config, registry, &auditor);
  if (!config->snapshotter.seed_namespaces.empty()) {
    puller.SetAfterPull([st = store->get(), cfg = &*config](const daemon::PullResult& r) {
      return snapshotter::HandOffToContainerd(
          *st, {r.manifest, r.image_manifest, r.config, r.layers, r.tenant},
          {cfg->snapshotter.containerd_socket, cfg->snapshotter.seed_namespaces,
           cfg->snapshotter.seed_hold});
    });
  }
  metrics::Registry metrics;  // each part registers what it measures; /v1/metrics renders it
  (*store)->RegisterMetrics(metrics);
  served->RegisterMetrics(metrics);
  auditor.RegisterMetrics(metrics);
  puller.RegisterMetrics(metrics);
  visibility.RegisterMetrics(metrics);
  daemon::ControlServer server(io, {.store = **store,
                                    .policies = policies,
                                    .config = *config,
                                    .puller = puller,
                                    .blocking = blocking,
                                    .mount = served,
                                    .visibility = &visibility,
                                    .auditor = &auditor,
                                    .metrics = &metrics});
  snapshotter::SnapshotterService snapshotter;
  daemon::Lifecycle lifecycle({.io = io,
                               .store = **store,
                               .mount = *served,
                               .auditor = auditor,
                               .visibility = visibility,
                               .config = *config,
                               .self_args = std::vector<std::string>(argv, argv + argc),
                               .stop_servers =
                                   [&] {
                                     if (snapshotter.server) snapshotter.server->Stop();
                                     server.Stop();
                                   }},
                              inherited.control.Get(),
                              inherited.snapshotter.Get());  // keeps copies to pass on
  if (auto r = server.Start(std::move(inherited.control)); !r) return Fail(r.error().ToString());
  if (config->snapshotter.enabled) {
    auto gid = daemon::SocketGroup(config->daemon);
    if (!gid) return Fail(gid.error().ToString());
    std::function<Result<void>(const std::string&)> pull_on_demand;
    if (config->snapshotter.pull_on_demand) {  // the gRPC thread waits while the io thread pulls
      pull_on_demand = [&puller, &visibility](const std::string& ref) {
        return puller.PullAndWait(ref, {.actor_uid = 0},
                                  [&visibility] { visibility.Revalidate(); });
      };
    }
    auto s = snapshotter::StartService(
        **store,
        {.root = config->snapshotter.root,
         .mountpoint = config->daemon.mountpoint,
         .wipe = config->snapshotter.wipe,
         .hidden = [&visibility](const verify::Digest& d) { return visibility.Hidden(d); },
         .pull = pull_on_demand},
        {.socket = config->snapshotter.socket,
         .listener = std::move(inherited.snapshotter),
         .mode = 0660,
         .group = *gid,
         .authorize = daemon::AdminsOnly(config->daemon),
         .on_refusal = auditor.RefusalReporter("snapshotter.refused")});
    if (!s) return Fail("snapshotter: " + s.error().ToString());
    snapshotter = std::move(*s);
    snapshotter.server->RegisterMetrics(metrics);
  }
  lifecycle.Start();
  log->info("ready: build={} store={} mount={} ({}) socket={}", DIGESTD_BUILD_TAG,
            config->store_root.string(), config->daemon.mountpoint.string(),
            served->adopted() ? "adopted" : "mounted", config->daemon.socket.string());
  (void)NotifyServiceManager("READY=1");
  io.run();
  lifecycle.Finish();
  // Pulls still in flight are coroutine frames owned by `io` that refer to the puller and the
  // registry client; nothing in them needs to run (staging files are anonymous, index writes
  // synced, blobs of uncommitted image transactions removed at the next start): exit here.
  spdlog::shutdown();
  std::fflush(nullptr);
  ::_exit(0);
}
