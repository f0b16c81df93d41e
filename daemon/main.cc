// digestd: the host daemon. main() is the one place that wires the parts together:
//   config -> io_uring check -> store (recovery, lock) -> policy and trust -> FUSE mount ->
//   control socket -> READY=1 (sd_notify) -> serve until SIGTERM/SIGINT; SIGHUP reloads policy
//   and trust (a bad file keeps the old ones; audited); SIGUSR2 hands over to a successor this
//   process starts (daemon/live_restart.h: the upgrade without a stall).
// Shutdown: stop accepting, abandon pulls in flight (their staging files vanish with the
// process; blobs their image transactions staged are removed at the next start), unmount.

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/signal_set.hpp>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <nlohmann/json.hpp>
#include <spdlog/spdlog.h>
#include <future>
#include <optional>
#include <string>
#include <unordered_set>

#include "common/fd_budget.h"
#include "common/log.h"
#include "common/service_manager.h"
#include "daemon/auditor.h"
#include "daemon/config.h"
#include "daemon/control_server.h"
#include "daemon/io_uring_check.h"
#include "daemon/live_restart.h"
#include "common/unix_socket.h"
#include "daemon/pull.h"
#include "daemon/registry_client.h"
#include "daemon/revalidate.h"
#include "snapshotter/content_seed.h"
#include "snapshotter/grpc_server.h"
#include "snapshotter/snapshots.h"
#include "fusefs/fuse_mount.h"
#include "store/store.h"
#include "verify/policy_set.h"

#ifndef DIGESTD_BUILD_TAG
#define DIGESTD_BUILD_TAG "release"  // digestd-next (tests) is built with another tag
#endif

namespace {

using namespace digestd;

int Fail(const std::string& what) {
  std::fprintf(stderr, "digestd: %s\n", what.c_str());
  return 1;
}

void AuditEvent(daemon::Auditor& auditor, std::string_view type, nlohmann::json j) {
  j["actor"] = "digestd";
  auditor.Record(type, j);
}

}  // namespace

// One pull for the snapshotter (a plain coroutine function: its parameters are copied into the
// frame, which GCC 12 gets right where lambda captures are not).
boost::asio::awaitable<void> PullOnDemand(daemon::Puller* puller, std::string ref,
                                          std::function<void()> after,
                                          std::shared_ptr<std::promise<Result<void>>> done) {
  daemon::PullOptions options;
  options.actor_uid = 0;
  auto r = co_await puller->Pull(ref, options);
  if (r) {
    after();
    done->set_value(Result<void>());
  } else {
    done->set_value(Result<void>(r.error()));
  }
}

int main(int argc, char** argv) {
  std::string config_path = "/etc/digestd/digestd.toml";
  bool check_only = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    if (a == "--check") {
      check_only = true;
    } else if (a == "--config" && i + 1 < argc) {
      config_path = argv[++i];
    } else if (a == "--version") {
      std::printf("digestd 0.1 (build %s)\n", DIGESTD_BUILD_TAG);
      return 0;
    } else {
      std::fprintf(stderr, "usage: digestd [--config FILE] [--check]\n");
      return 2;
    }
  }
  auto log = Logger("digestd");
  auto config = daemon::LoadConfig(config_path);
  if (!config) return Fail(config.error().ToString());
  for (const auto& ns : config->snapshotter.seed_namespaces) {
    if (!snapshotter::ValidContainerdNamespace(ns)) {
      return Fail(config_path + ": snapshotter.seed_namespaces: \"" + ns +
                  "\" is not a containerd namespace name");
    }
  }
  if (check_only) {
    // Config, policy and trust as the daemon would load them; nothing is opened or mounted.
    verify::PolicySet check(config->policy_path, config->trust_path);
    if (auto r = check.Reload(); !r) return Fail(r.error().ToString());
    std::printf("%s: configuration, policy and trust are valid\n", config_path.c_str());
    return 0;
  }
  log->info("starting: build={} pid={}", DIGESTD_BUILD_TAG, ::getpid());
  const std::vector<std::string> self_args(argv, argv + argc);  // what a successor runs
  // What the service manager handed over (a live mount's session, socket-unit listeners): taken
  // first, so that no child process ever inherits them.
  daemon::Inherited inherited = daemon::TakeInherited();
  if (auto r = daemon::CheckIoUring(); !r) return Fail(r.error().ToString());

  // Every reader of the mount and client of the sockets costs an fd: take the whole hard limit
  // (the unit raises it), and size the mount's fd cache from it.
  const std::uint64_t fd_limit = RaiseFdLimit();
  verify::PolicySet policies(config->policy_path, config->trust_path);
  if (auto r = policies.Reload(); !r) return Fail(r.error().ToString());
  // Started by a running digestd (SIGUSR2): everything above overlapped its serving; the store
  // and the mount are ours once it has gone.
  std::optional<daemon::Predecessor> predecessor;
  if (inherited.handover) {
    store::Store::WarmUp();  // the open that follows runs warm
    auto p = daemon::Predecessor::Await(std::move(inherited.handover), std::chrono::seconds(60));
    if (!p) return Fail(p.error().ToString());
    predecessor.emplace(std::move(*p));
  }
  auto store = store::Store::Open({.root = config->store_root, .quota_bytes = config->quota_bytes});
  if (!store) return Fail(store.error().ToString());
  daemon::Auditor auditor(**store, config->audit);
  // Leases of pulls that were in flight when a previous daemon stopped are transient: the
  // store's recovery dropped them (audited), whatever their ids.
  // Listeners from socket units, kept to pass on to a successor (the servers own the originals).
  UniqueFd control_listener, snapshotter_listener;
  if (inherited.control) control_listener = UniqueFd(::fcntl(inherited.control.Get(), F_DUPFD_CLOEXEC, 3));
  if (inherited.snapshotter) {
    snapshotter_listener = UniqueFd(::fcntl(inherited.snapshotter.Get(), F_DUPFD_CLOEXEC, 3));
  }

  daemon::HiddenSet hidden;
  // Images whose admission no longer holds are hidden before the mount serves anything (an
  // adopted mount serves at once); revalidate() below audits them and drops kernel caches.
  if (auto r = daemon::Revalidate(**store, policies.Current(), static_cast<std::int64_t>(::time(nullptr)))) {
    hidden.Replace(r->hidden);
  }
  // blobs/ under the mount is for root and the first admin group ([daemon] admin_gids) only:
  // raw layer tars and configs would bypass the modes of the files in the layers.
  const gid_t admin_gid = config->daemon.admin_gids.empty() ? 0 : config->daemon.admin_gids.front();
  auto mount = daemon::MountOrAdopt(
      **store,
      {.mountpoint = config->daemon.mountpoint.string(),
       .content_cache_entries = ContentCacheBudget(fd_limit),
       .blobs_gid = admin_gid,
       .hidden = [&hidden](const verify::Digest& d) { return hidden.Contains(d); },
       .warm = predecessor ? predecessor->served() : std::vector<verify::Digest>{}},
      std::move(inherited.session), predecessor && predecessor->serving());
  if (!mount) return Fail(mount.error().ToString());
  // Both of us serve the mount now: the predecessor may stop.
  if (predecessor && predecessor->Retire(std::chrono::seconds(10))) (*mount)->Resend();
  log->info("fd limit {}: the mount keeps at most {} backing fds open", fd_limit,
            ContentCacheBudget(fd_limit));
  // Whatever a removal (GC, quota, wipe) takes away, the mount stops serving at once: its views
  // and cached fds go, and a later pull of the same digest gets fresh ones.
  fusefs::FuseMount* served = mount->get();
  (*store)->SetRemovalListener([served](const std::vector<verify::Digest>& removed) {
    for (const auto& d : removed) served->Removed(d);
  });

  boost::asio::io_context io;
  // The blocking executor: staging checks, unpacking, image commits (their syncfs), GC and wipes
  // run here, never on the event loop.
  boost::asio::thread_pool blocking(4);
  daemon::RegistryClient registry(io, *config);
  daemon::Puller puller(io, blocking, **store, policies, *config, registry);
  if (!config->snapshotter.seed_namespaces.empty()) {
    // Every pulled image is also handed to containerd's content store (verified bytes only), so
    // that clients which download before they unpack find it there.
    store::Store* st = store->get();
    const daemon::Config* cfg = &*config;
    puller.SetAfterPull([st, cfg, log](const daemon::PullResult& r) -> Result<void> {
      // A tenant's pull stays in digestd's store only: containerd's content store is shared by
      // every client of containerd and a lease wipe cannot reach (or overwrite) its copies.
      if (!r.tenant.empty()) {
        log->info("containerd content: {} not handed over (tenant {}: wiped with its lease)",
                  r.manifest.ToString(), r.tenant);
        return {};
      }
      std::vector<verify::Digest> blobs = {r.manifest};
      if (r.image_manifest != r.manifest) blobs.push_back(r.image_manifest);
      blobs.push_back(r.config);
      blobs.insert(blobs.end(), r.layers.begin(), r.layers.end());
      for (const auto& ns : cfg->snapshotter.seed_namespaces) {
        auto seeded = snapshotter::SeedContainerdContent(
            *st, blobs,
            {.containerd_socket = cfg->snapshotter.containerd_socket,
             .ns = ns,
             .hold = cfg->snapshotter.seed_hold});
        if (!seeded) return std::move(seeded).error().Wrap("namespace " + ns);
        log->info("containerd content: {} in namespace {}: {} blobs written ({} bytes), {} present",
                  r.manifest.ToString(), ns, seeded->written, seeded->bytes, seeded->present);
      }
      return {};
    });
  }
  // Cached images whose admission no longer holds are withdrawn from the mount.
  std::unordered_set<verify::Digest> withdrawn_before;
  std::unordered_set<verify::Digest> hidden_before;
  auto revalidate = [&]() {
    auto r = daemon::Revalidate(**store, policies.Current(), static_cast<std::int64_t>(::time(nullptr)));
    if (!r) {
      log->error("re-evaluating cached images failed (visibility unchanged): {}", r.error().ToString());
      return;
    }
    for (const auto& w : r->withdrawn) {
      if (withdrawn_before.count(w.manifest)) continue;
      log->warn("withdrawn from the mount: {} ({}): {}", w.reference, w.manifest.ToString(), w.reason);
      AuditEvent(auditor, "image.withdrawn", {{"digest", w.manifest.ToString()},
                           {"reference", w.reference}, {"reason", w.reason}});
    }
    withdrawn_before.clear();
    for (const auto& w : r->withdrawn) withdrawn_before.insert(w.manifest);
    log->info("re-evaluated cached images: {} withdrawn, {} digests hidden", r->withdrawn.size(),
              r->hidden.size());
    hidden.Replace(r->hidden);
    // Newly hidden digests: the kernel may hold their attributes. (Newly visible ones need
    // nothing: the mount never lets the kernel cache a withheld name.)
    for (const auto& d : r->hidden) {
      if (!hidden_before.count(d)) (*mount)->Invalidate(d);
    }
    hidden_before = r->hidden;
  };
  revalidate();
  if ((*mount)->adopted()) {
    // The kernel kept the predecessor's caches: names of digests denied meanwhile go now.
    if (auto denied = (*store)->ListDenied()) {
      for (const auto& d : *denied) (*mount)->Invalidate(d.digest);
    }
  }
  auto reload = [&]() -> Result<void> {
    auto r = policies.Reload();
    AuditEvent(auditor, "policy.reload", {{"ok", r.has_value()},
                         {"reason", r ? "" : r.error().ToString()}});
    if (!r) {
      log->error("reload refused, keeping the previous policy: {}", r.error().ToString());
      return r;
    }
    revalidate();
    return r;
  };
  std::unique_ptr<snapshotter::Snapshots> snapshots;
  std::unique_ptr<snapshotter::GrpcServer> snapshotter_server;
  daemon::ControlServer server(io, {.store = **store,
                                    .policies = policies,
                                    .config = *config,
                                    .puller = puller,
                                    .blocking = blocking,
                                    .mount = mount->get(),
                                    .reload = reload,
                                    .revalidate = revalidate,
                                    .hidden = &hidden,
                                    .auditor = &auditor,
                                    .other_accept_failures =
                                        [&snapshotter_server]() -> std::uint64_t {
                                      return snapshotter_server
                                                 ? snapshotter_server->accept_failures()
                                                 : 0;
                                    }});
  if (auto r = server.Start(std::move(inherited.control)); !r) return Fail(r.error().ToString());

  // containerd's remote snapshotter: verified layers only, same peer rules as the control socket
  // (admins only: containerd runs as root).
  if (config->snapshotter.enabled) {
    // Pull on demand: the gRPC thread waits while the io thread runs the pull.
    std::function<Result<void>(const std::string&)> pull_on_demand;
    if (config->snapshotter.pull_on_demand) {
      pull_on_demand = [&io, &puller, &revalidate](const std::string& ref) -> Result<void> {
        auto done = std::make_shared<std::promise<Result<void>>>();
        auto result = done->get_future();
        std::function<void()> after = revalidate;
        boost::asio::co_spawn(io, PullOnDemand(&puller, ref, std::move(after), done),
                              boost::asio::detached);
        return result.get();
      };
    }
    auto s = snapshotter::Snapshots::Open(
        **store, {.root = config->snapshotter.root,
                  .mountpoint = config->daemon.mountpoint,
                  .wipe = config->snapshotter.wipe,
                  .hidden = [&hidden](const verify::Digest& d) { return hidden.Contains(d); },
                  .pull = pull_on_demand});
    if (!s) return Fail("snapshotter: " + s.error().ToString());
    snapshots = std::move(*s);
    gid_t socket_gid = ::getegid();
    if (!config->daemon.socket_group.empty()) {
      auto g = GroupId(config->daemon.socket_group, Module::kDaemon);
      if (!g) return Fail("daemon.socket_group: " + g.error().ToString());
      socket_gid = *g;
    }
    auto g = snapshotter::GrpcServer::Start(
        *snapshots,
        {.socket = config->snapshotter.socket,
         .listener = std::move(inherited.snapshotter),
         .mode = 0660,
         .group = socket_gid,
         .authorize =
             [&config](uid_t uid, gid_t gid) {
               return daemon::RoleFor(config->daemon, {.uid = uid, .gid = gid}) ==
                      daemon::Role::kAdmin;
             },
         .on_refusal =
             [&auditor, log](const std::string& what) {
               log->warn("snapshotter: {}", what);
               // Refusals share one budget (the callback does not carry the peer's uid).
               auditor.Refusal(-1, "snapshotter.refused", {{"actor", "digestd"}, {"reason", what}});
             }});
    if (!g) return Fail("snapshotter: " + g.error().ToString());
    snapshotter_server = std::move(*g);
    log->info("snapshotter: serving containerd on {} (snapshots in {})",
              config->snapshotter.socket.string(), config->snapshotter.root.string());
  }

  boost::asio::signal_set signals(io, SIGTERM, SIGINT, SIGHUP);
  signals.add(SIGUSR2);
  std::unique_ptr<daemon::Successor> successor;
  auto stop_serving = [&] {
    if (snapshotter_server) snapshotter_server->Stop();
    server.Stop();
    io.stop();
  };
  // SIGUSR2: start the next process (the binary on disk now: an upgrade) and hand over to it
  // once it stands by; until then, and if it fails, this one serves on.
  auto hand_over = [&] {
    if (successor) {
      log->warn("SIGUSR2: a hand-over to pid {} is already under way", successor->pid());
      return;
    }
    if (!config->daemon.handover || !ServiceManagerPresent()) {
      log->warn("SIGUSR2: a hand-over needs a service manager to keep the session and "
                "[daemon] handover = true; ignored");
      return;
    }
    auto session = (*mount)->Export();
    if (!session) {
      log->error("SIGUSR2: cannot hand over: {}", session.error().ToString());
      return;
    }
    std::vector<std::pair<std::string, int>> fds = {{"fuse", session->fuse.Get()},
                                                    {"fuse-state", session->state.Get()}};
    if (control_listener) fds.emplace_back("control", control_listener.Get());
    if (snapshotter_listener) fds.emplace_back("snapshotter", snapshotter_listener.Get());
    auto spawned = daemon::Successor::Spawn(io, self_args, fds);
    if (!spawned) {
      log->error("SIGUSR2: cannot start a successor: {}", spawned.error().ToString());
      return;
    }
    successor = std::move(*spawned);
    const pid_t next = successor->pid();
    log->info("SIGUSR2: started successor pid {}; serving until it stands by", next);
    successor->Await(
        std::chrono::seconds(60),
        [&, next] {
          // The manager first: from here the successor is the service, this process is not.
          if (auto r = NotifyServiceManager("MAINPID=" + std::to_string(next)); !r) {
            log->error("hand-over to pid {} abandoned, still serving: {}", next, r.error().ToString());
            successor.reset();
            return;
          }
          if (auto r = successor->Go(); !r) log->error("hand-over: {}", r.error().ToString());
          log->info("hand-over: pid {} is the service now; stopping the control servers", next);
          stop_serving();
        },
        [&, next](const std::string& why) {
          log->error("hand-over to pid {} failed, still serving: {}", next, why);
          AuditEvent(auditor, "daemon.handover_failed", {{"pid", next}, {"reason", why}});
          successor.reset();
        });
  };
  std::function<void(const boost::system::error_code&, int)> on_signal =
      [&](const boost::system::error_code& ec, int sig) {
        if (ec) return;
        if (sig == SIGHUP) {
          log->info("SIGHUP: reloading policy and trust");
          (void)reload();
          signals.async_wait(on_signal);
          return;
        }
        if (sig == SIGUSR2) {
          hand_over();
          signals.async_wait(on_signal);
          return;
        }
        log->info("signal {}: shutting down", sig);
        (void)NotifyServiceManager("STOPPING=1");
        stop_serving();
      };
  signals.async_wait(on_signal);

  log->info("ready: build={} store={} mount={} ({}) socket={}", DIGESTD_BUILD_TAG,
            config->store_root.string(), config->daemon.mountpoint.string(),
            (*mount)->adopted() ? "adopted" : "mounted", config->daemon.socket.string());
  (void)NotifyServiceManager("READY=1");
  io.run();
  if (successor && !successor->went()) successor.reset();  // it never took over: it goes with us
  // While the mount still serves: the successor's store open then has little log to replay.
  if (auto r = (*store)->FlushIndex(); !r) log->warn("index not flushed: {}", r.error().ToString());

  // The next start skips recovery's walks when nothing was in progress (a restart's stall).
  bool clean = false;
  if (successor && successor->went()) {
    // A hand-over: the store goes to the successor while this process still serves the mount
    // (read-only), and the successor serves it too before this one stops reading.
    clean = (*store)->MarkCleanShutdown();
    if (clean && (*store)->ReleaseForSuccessor()) {
      successor->Released((*mount)->ns().Built());
      log->info("hand-over: store released to pid {}; serving until it takes the mount",
                successor->pid());
      successor->AwaitRetire(std::chrono::seconds(30));
    }
    daemon::ReleaseMount(**mount, config->daemon.handover);
    successor->Detached();
  } else {
    daemon::ReleaseMount(**mount, config->daemon.handover);
    clean = (*store)->MarkCleanShutdown();
  }
  log->info("stopped{}", clean ? " (clean stop recorded)" : "");
  // Pulls still in flight are coroutine frames owned by `io` that refer to the puller and the
  // registry client; tearing those down in any order risks touching freed objects, and nothing
  // in them needs to run: staging files are anonymous, index writes are synced, and blobs staged
  // by uncommitted image transactions are removed at the next start. So exit here without destructors.
  spdlog::shutdown();
  std::fflush(nullptr);
  ::_exit(0);
}
