#pragma once

// The pull's BlobSink: a blob's bytes go into the pull's image transaction. Bytes are written to
// the staging file through io_uring (Asio's file support) on the event loop; checking what was
// written and publishing it (ImageTxn::Stage) runs on the blocking executor.

#include <cstdint>
#include <memory>
#include <optional>

#include <boost/asio/io_context.hpp>
#include <boost/asio/random_access_file.hpp>
#include <boost/asio/thread_pool.hpp>

#include "daemon/registry_client.h"
#include "store/image_txn.h"

namespace digestd::daemon {

class StoreBlobSink final : public BlobSink {
 public:
  StoreBlobSink(asio::io_context& io, asio::thread_pool& blocking, store::ImageTxn& txn,
                verify::Digest digest, std::uint64_t size, store::IngestOptions options);
  ~StoreBlobSink() override;

  asio::awaitable<Result<bool>> Open() override;
  asio::awaitable<Result<void>> Write(std::uint64_t offset,
                                      std::span<const std::byte> data) override;
  asio::awaitable<Result<void>> Finish() override;
  void Abandon() override;

  // Whether this sink wrote the blob (false: it was stored or held already).
  bool fetched() const { return fetched_; }

 private:
  asio::io_context& io_;
  asio::thread_pool& blocking_;
  store::ImageTxn& txn_;
  const verify::Digest digest_;
  const std::uint64_t size_;
  const store::IngestOptions options_;
  store::BlobWriterPtr writer_;
  std::optional<asio::random_access_file> file_;
  bool fetched_ = false;
};

}  // namespace digestd::daemon
