#include "daemon/store_sink.h"
#include "daemon/errors.h"

#include <unistd.h>

#include <boost/asio/redirect_error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write_at.hpp>

#include "daemon/blocking.h"

namespace digestd::daemon {

StoreBlobSink::StoreBlobSink(asio::io_context& io, asio::thread_pool& blocking,
                             store::ImageTxn& txn, verify::Digest digest, std::uint64_t size,
                             store::IngestOptions options)
    : io_(io),
      blocking_(blocking),
      txn_(txn),
      digest_(std::move(digest)),
      size_(size),
      options_(std::move(options)) {}

StoreBlobSink::~StoreBlobSink() { Abandon(); }

asio::awaitable<Result<bool>> StoreBlobSink::Open() {
  Abandon();
  for (;;) {
    auto w = txn_.Ingest(digest_, size_, options_);
    if (w) {
      if (!*w) co_return false;  // stored or staged already: held by the transaction now
      writer_ = std::move(*w);
      break;
    }
    if (w.error().code() != Errc::kBusy) co_return w.error();
    // Another pull is writing the same blob (then this one holds its result), or maintenance
    // holds the store: never block the event loop, poll.
    co_await Sleep(io_, std::chrono::milliseconds(20));
  }
  auto slot = writer_->BeginWrite(0);
  if (!slot) co_return slot.error();
  const int fd = ::dup(slot->fd);
  if (fd < 0) co_return SysError(Module::kDaemon, "dup staging fd");
  file_.emplace(io_, fd);
  co_return true;
}

asio::awaitable<Result<void>> StoreBlobSink::Write(std::uint64_t offset,
                                                   std::span<const std::byte> data) {
  if (!writer_) co_return DaemonError(Errc::kAborted, "blob sink not open");
  auto slot = writer_->BeginWrite(data.size());
  if (!slot) co_return slot.error();
  if (slot->offset != offset) {
    co_return DaemonError(Errc::kInternal, "blob bytes out of order");
  }
  boost::system::error_code ec;
  co_await asio::async_write_at(*file_, slot->offset, asio::buffer(data.data(), data.size()),
                                asio::redirect_error(asio::use_awaitable, ec));
  if (ec) {
    co_return DaemonError(Errc::kIo,
                        "writing " + digest_.ToString() + " to staging: " + ec.message());
  }
  // The store's follower (hash, unpack) may lag behind the network: wait for it here without
  // blocking the event loop, which serves other downloads and the control socket.
  auto done = writer_->CompleteWrite(data, store::BlobWriter::Backpressure::kReport);
  if (!done) co_return done.error();
  while (writer_->Saturated()) co_await Sleep(io_, std::chrono::milliseconds(1));
  co_return Result<void>();
}

asio::awaitable<Result<void>> StoreBlobSink::Finish() {
  if (!writer_) co_return DaemonError(Errc::kAborted, "blob sink not open");
  file_.reset();
  store::ImageTxn* txn = &txn_;
  store::BlobWriter* w = writer_.get();
  const BlockingFn stage = [txn, w] { return txn->Stage(*w); };
  auto err = co_await OffThread(blocking_, stage);
  writer_.reset();
  if (err) co_return *err;
  fetched_ = true;
  co_return Result<void>();
}

void StoreBlobSink::Abandon() {
  file_.reset();
  if (writer_) writer_->Abort();
  writer_.reset();
}

}  // namespace digestd::daemon
