#pragma once

// The daemon's blocking executor: a thread pool created in main and handed to whatever must run
// blocking work (fsync/syncfs, hashing that has to finish, unpacking, GC, wipes) without stalling
// the event loop, which serves the network, the control socket and every pull.

#include <chrono>
#include <functional>
#include <optional>

#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/thread_pool.hpp>

#include "common/error.h"

namespace digestd::daemon {

namespace asio = boost::asio;

// Runs `fn` on `pool` and resumes the calling coroutine with its error, if any. `fn` is taken by
// reference and must live until the await completes (a named local in the caller): GCC 12
// double-destroys lambdas passed by value into coroutines.
using BlockingFn = std::function<Result<void>()>;
asio::awaitable<std::optional<Error>> OffThread(asio::thread_pool& pool, const BlockingFn& fn);

// The other way round: runs `task` on `io`'s thread and blocks the calling thread until it is
// done (the snapshotter's gRPC threads ask for pulls this way). Called on `io`'s own thread it
// would wait for itself: it refuses instead (kInternal). If `io` stops first the caller waits
// until the process exits (the daemon exits without running what is left).
using IoTask = std::function<asio::awaitable<Result<void>>()>;
Result<void> RunOnIo(asio::io_context& io, IoTask task);

// Suspends the calling coroutine for `d` without blocking the event loop.
asio::awaitable<void> Sleep(asio::io_context& io, std::chrono::milliseconds d);

}  // namespace digestd::daemon
