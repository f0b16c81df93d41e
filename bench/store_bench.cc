// store_bench: ingest throughput of the store against its practical limits, in one run.
//   store_ingest       Store::Ingest + Write (1 MiB chunks) + Commit of a SIZE-byte stream
//   plain_write_fsync  write() of the same chunks into a file on the same filesystem + fsync
//   paced_write_fdatasync  the same writes paced as the store paces its own (store/fs_util.h
//                      WritebackPacer: sync_file_range windows of --writeback bytes, at most 8
//                      windows dirty), then fdatasync: the limit for a writer that bounds its
//                      dirty pages as the store does
//   sha256             hashing the same chunks alone (OpenSSL EVP)
//   paced_write_and_hash  the paced write on this thread while a second thread hashes the same
//                      chunks from memory: both at once, as the store must on these cores (the
//                      kernel's writeback competes with the hashing for the CPU)
// The limits are the slower of each write and hashing: ratio store_vs_limit against the naive
// write, ratio store_vs_paced_limit against the paced one, ratio store_vs_parallel_limit
// against writing and hashing at once (the closest to what the store does).
// Each figure is the median of --runs runs. Output lines: "bench <name> <value> <unit>" and
// "ratio <name> <x>".
//
// Usage: store_bench [--size BYTES] [--runs N] [--dir DIR] [--writeback BYTES]
//        (defaults: 1 GiB, 3 runs, /var/tmp, the store's default writeback interval of 8 MiB)

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <optional>
#include <string>
#include <thread>
#include <vector>

#include "store/fs_util.h"  // WritebackPacer: the baseline paces its writes as the store does
#include "store/store.h"
#include "verify/hasher.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using digestd::verify::Digest;
using digestd::verify::DigestAlgorithm;
using digestd::verify::Hasher;

constexpr std::size_t kChunk = 1 << 20;
constexpr std::size_t kPool = 64 << 20;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "store_bench: %s\n", msg.c_str());
  std::exit(1);
}

std::uint64_t ParseSize(const char* s) {
  char* end = nullptr;
  std::uint64_t v = std::strtoull(s, &end, 10);
  std::string suffix(end);
  if (suffix == "KiB" || suffix == "K") v <<= 10;
  else if (suffix == "MiB" || suffix == "M") v <<= 20;
  else if (suffix == "GiB" || suffix == "G") v <<= 30;
  else if (!suffix.empty()) Die("bad size " + std::string(s));
  return v;
}

// A pool of pseudo-random bytes (xorshift; incompressible enough for disk and hash figures).
std::vector<char> MakePool() {
  std::vector<char> pool(kPool);
  std::uint64_t x = 0x9e3779b97f4a7c15ull;
  for (std::size_t i = 0; i < kPool; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    std::memcpy(pool.data() + i, &x, 8);
  }
  return pool;
}

// The i-th chunk of the benchmark stream.
std::string_view Chunk(const std::vector<char>& pool, std::uint64_t i, std::uint64_t total) {
  const std::uint64_t off = (i * 7919 * 4096) % (kPool - kChunk);
  const std::uint64_t len = std::min<std::uint64_t>(kChunk, total - i * kChunk);
  return std::string_view(pool.data() + off, len);
}

double Seconds(Clock::time_point a, Clock::time_point b) {
  return std::chrono::duration<double>(b - a).count();
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t size = 1ull << 30;
  int runs = 3;
  fs::path dir = "/var/tmp";
  std::uint64_t writeback = 8u << 20;  // StoreOptions::writeback_interval
  for (int i = 1; i < argc; ++i) {
    std::string a = argv[i];
    if (a == "--size" && i + 1 < argc) size = ParseSize(argv[++i]);
    else if (a == "--runs" && i + 1 < argc) runs = std::max(1, std::atoi(argv[++i]));
    else if (a == "--dir" && i + 1 < argc) dir = argv[++i];
    else if (a == "--writeback" && i + 1 < argc) writeback = ParseSize(argv[++i]);
    else Die("usage: store_bench [--size BYTES] [--runs N] [--dir DIR] [--writeback BYTES]");
  }
  const fs::path work = dir / ("store_bench." + std::to_string(::getpid()));
  fs::create_directories(work);
  ::chmod(work.c_str(), 0700);
  const auto pool = MakePool();
  const std::uint64_t chunks = (size + kChunk - 1) / kChunk;

  std::vector<double> plain_mbs, paced_mbs, both_mbs, hash_mbs, store_mbs;
  std::optional<Digest> digest;
  // Writes the stream into work/name: plain writes then fsync, or paced as the store paces its
  // own (store/fs_util.h WritebackPacer, 8 windows as in store/blob_writer.cc) then fdatasync.
  auto write_file = [&](const char* name, bool paced) {
    const fs::path file = work / name;
    int fd = ::open(file.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0) Die(std::string("open ") + name);
    digestd::store::WritebackPacer pacer(writeback, 8);
    std::uint64_t written = 0;
    for (std::uint64_t i = 0; i < chunks; ++i) {
      auto c = Chunk(pool, i, size);
      if (::write(fd, c.data(), c.size()) != static_cast<ssize_t>(c.size())) Die("write");
      written += c.size();
      if (paced) pacer.Advance(fd, written);
    }
    if ((paced ? ::fdatasync(fd) : ::fsync(fd)) != 0) Die("sync");
    ::close(fd);
  };
  auto hash_all = [&] {
    auto h = Hasher::Create(DigestAlgorithm::kSha256);
    for (std::uint64_t i = 0; i < chunks; ++i) h->Update(Chunk(pool, i, size));
    return h->Finish();
  };
  // MB/s of `fn`, started after a sync.
  auto rate = [&](const std::function<void()>& fn) {
    ::sync();
    const auto t0 = Clock::now();
    fn();
    return static_cast<double>(size) / 1e6 / Seconds(t0, Clock::now());
  };
  for (int r = 0; r < runs; ++r) {
    plain_mbs.push_back(rate([&] { write_file("plain", false); }));
    fs::remove(work / "plain");
    paced_mbs.push_back(rate([&] { write_file("paced", true); }));
    fs::remove(work / "paced");
    // Paced write and hash at once (two threads), as the store must do both.
    both_mbs.push_back(rate([&] {
      std::thread hasher([&] { (void)hash_all(); });
      write_file("both", true);
      hasher.join();
    }));
    fs::remove(work / "both");
    hash_mbs.push_back(rate([&] { digest = hash_all(); }));
    // the store
    {
      const fs::path root = work / "store";
      auto store = digestd::store::Store::Open({.root = root, .writeback_interval = writeback});
      if (!store) Die(store.error().ToString());
      ::sync();
      const auto t0 = Clock::now();
      auto w = (*store)->Ingest(*digest, size);
      if (!w) Die(w.error().ToString());
      for (std::uint64_t i = 0; i < chunks; ++i) {
        if (auto ok = (*w)->Write(Chunk(pool, i, size)); !ok) Die(ok.error().ToString());
      }
      if (auto ok = (*w)->Commit(); !ok) Die(ok.error().ToString());
      const auto t1 = Clock::now();
      store_mbs.push_back(static_cast<double>(size) / 1e6 / Seconds(t0, t1));
      store->reset();
      fs::remove_all(root);
    }
    std::fprintf(stderr,
                 "run %d: plain %.0f MB/s, paced %.0f MB/s, paced+hash %.0f MB/s, sha256 %.0f MB/s, "
                 "store %.0f MB/s\n",
                 r, plain_mbs.back(), paced_mbs.back(), both_mbs.back(), hash_mbs.back(),
                 store_mbs.back());
  }
  fs::remove_all(work);

  const double plain = Median(plain_mbs), paced = Median(paced_mbs), both = Median(both_mbs),
               hash = Median(hash_mbs), store = Median(store_mbs);
  std::printf("bench store_ingest %.1f MB/s\n", store);
  std::printf("bench plain_write_fsync %.1f MB/s\n", plain);
  std::printf("bench paced_write_fdatasync %.1f MB/s\n", paced);
  std::printf("bench paced_write_and_hash %.1f MB/s\n", both);
  std::printf("bench sha256 %.1f MB/s\n", hash);
  std::printf("bench store_bench_size %llu bytes\n", static_cast<unsigned long long>(size));
  std::printf("ratio store_vs_limit %.3f\n", store / std::min(plain, hash));
  std::printf("ratio store_vs_paced_limit %.3f\n", store / std::min(paced, hash));
  std::printf("ratio store_vs_parallel_limit %.3f\n", store / both);
  return 0;
}
