// The bridges between the event loop and other threads: RunOnIo (a gRPC thread waits for a pull
// on the io thread) returns the task's result, refuses to run on the io thread itself (it would
// wait for itself), and turns a throwing task into an error.

#include "daemon/blocking.h"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <future>
#include <stdexcept>
#include <thread>

namespace digestd::daemon {
namespace {

class RunOnIoTest : public ::testing::Test {
 protected:
  void SetUp() override {
    thread_ = std::thread([this] { io_.run(); });
  }
  void TearDown() override {
    guard_.reset();
    io_.stop();
    thread_.join();
  }
  asio::io_context io_;
  asio::executor_work_guard<asio::io_context::executor_type> guard_ = asio::make_work_guard(io_);
  std::thread thread_;
};

TEST_F(RunOnIoTest, ReturnsWhatTheTaskReturnsOnTheIoThread) {
  std::thread::id ran_on;
  asio::io_context* io = &io_;
  auto r = RunOnIo(io_, [io, &ran_on]() -> asio::awaitable<Result<void>> {
    co_await Sleep(*io, std::chrono::milliseconds(5));
    ran_on = std::this_thread::get_id();
    co_return Result<void>();
  });
  EXPECT_TRUE(r);
  EXPECT_EQ(ran_on, thread_.get_id());
  auto failed = RunOnIo(io_, []() -> asio::awaitable<Result<void>> {
    co_return MakeError(Module::kDaemon, Errc::kNotFound, "no such image");
  });
  ASSERT_FALSE(failed);
  EXPECT_EQ(failed.error().code(), Errc::kNotFound);
}

TEST_F(RunOnIoTest, OnTheIoThreadItRefusesInsteadOfWaitingForItself) {
  std::promise<Result<void>> got;
  asio::io_context* io = &io_;
  asio::co_spawn(
      io_,
      [io, &got]() -> asio::awaitable<void> {
        got.set_value(RunOnIo(*io, []() -> asio::awaitable<Result<void>> { co_return Result<void>(); }));
        co_return;
      },
      asio::detached);
  auto r = got.get_future().get();
  ASSERT_FALSE(r);
  EXPECT_EQ(r.error().code(), Errc::kInternal);
}

TEST_F(RunOnIoTest, ATaskThatThrowsIsAnError) {
  auto r = RunOnIo(io_, []() -> asio::awaitable<Result<void>> {
    throw std::runtime_error("boom");
    co_return Result<void>();
  });
  ASSERT_FALSE(r);
  EXPECT_NE(r.error().ToString().find("boom"), std::string::npos);
}

}  // namespace
}  // namespace digestd::daemon
