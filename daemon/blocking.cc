#include "daemon/blocking.h"
#include "daemon/errors.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <future>
#include <memory>

namespace digestd::daemon {

asio::awaitable<std::optional<Error>> OffThread(asio::thread_pool& pool, const BlockingFn& fn) {
  const BlockingFn* f = &fn;
  co_return co_await asio::co_spawn(
      pool,
      [f]() -> asio::awaitable<std::optional<Error>> {
        auto r = (*f)();
        if (r) co_return std::nullopt;
        co_return r.error();
      },
      asio::use_awaitable);
}

namespace {

// A plain coroutine function (its parameters are copied into the frame, which GCC 12 gets right
// where lambda captures are not).
asio::awaitable<void> RunAndTell(IoTask task, std::shared_ptr<std::promise<Result<void>>> done) {
  // The awaited value is a named local first: GCC 12 miscompiles a co_await used as a call's
  // argument (a temporary destroyed twice: "free(): invalid pointer" under pull on demand).
  Result<void> r = co_await task();
  done->set_value(std::move(r));
}

}  // namespace

Result<void> RunOnIo(asio::io_context& io, IoTask task) {
  if (io.get_executor().running_in_this_thread()) {
    return DaemonError(Errc::kInternal,
                     "RunOnIo called on the io thread: it would wait for itself");
  }
  auto done = std::make_shared<std::promise<Result<void>>>();
  auto result = done->get_future();
  asio::co_spawn(io, RunAndTell(std::move(task), done), [done](std::exception_ptr e) {
    if (!e) return;
    try {
      std::rethrow_exception(e);
    } catch (const std::exception& ex) {
      done->set_value(DaemonError(Errc::kInternal, std::string("io task threw: ") + ex.what()));
    }
  });
  return result.get();
}

asio::awaitable<void> Sleep(asio::io_context& io, std::chrono::milliseconds d) {
  asio::steady_timer t(io, d);
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace digestd::daemon
