#include "daemon/blocking.h"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/redirect_error.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

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

asio::awaitable<void> Sleep(asio::io_context& io, std::chrono::milliseconds d) {
  asio::steady_timer t(io, d);
  boost::system::error_code ec;
  co_await t.async_wait(asio::redirect_error(asio::use_awaitable, ec));
}

}  // namespace digestd::daemon
