#include "daemon/offline_pull.h"
#include "daemon/errors.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>
#include <optional>
#include <string>

#include "daemon/pull.h"
#include "daemon/registry_client.h"

namespace digestd::daemon {

Result<PullResult> PullOffline(store::Store& store, verify::PolicySet& policies,
                               const Config& config, std::string_view reference,
                               PullOptions options) {
  asio::io_context io;
  RegistryClient registry(io, config);
  asio::thread_pool blocking(4);
  Puller puller(io, blocking, store, policies, config, registry);
  std::optional<Result<PullResult>> result;
  const std::string ref(reference);
  asio::co_spawn(
      io, [&]() -> asio::awaitable<void> { result.emplace(co_await puller.Pull(ref, options)); },
      [](std::exception_ptr e) {
        if (e) std::rethrow_exception(e);
      });
  io.run();
  blocking.join();
  if (!result) return DaemonError(Errc::kInternal, "the pull did not run");
  return std::move(*result);
}

}  // namespace digestd::daemon
