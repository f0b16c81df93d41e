// Child process of the store crash test: ingests blobs in a loop and reports each digest on stdout
// right after its Commit() returned. The parent SIGKILLs it at random moments.
// Usage: store_crash_child ROOT SEED

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include "store/store.h"
#include "verify/hasher.h"

using digestd::store::Store;
using digestd::store::StoreOptions;
using digestd::verify::DigestAlgorithm;
using digestd::verify::Hasher;

int main(int argc, char** argv) {
  if (argc != 3) return 2;
  std::mt19937_64 rng(std::strtoull(argv[2], nullptr, 10));
  auto store = Store::Open(StoreOptions{.root = argv[1], .writeback_interval = 256 << 10});
  if (!store) {
    std::fprintf(stderr, "crash child: %s\n", store.error().ToString().c_str());
    return 3;
  }
  std::printf("S\n");
  std::fflush(stdout);
  std::vector<char> buf;
  for (std::uint64_t i = 0;; ++i) {
    // Mostly small blobs, sometimes a few MiB so kills also land mid-write and mid-writeback.
    const std::size_t size = (rng() % 16 == 0) ? (1u << 20) + rng() % (3u << 20) : rng() % 65536;
    buf.resize(size);
    for (auto& c : buf) c = static_cast<char>(rng());
    const std::string_view data(buf.data(), buf.size());
    const auto digest = Hasher::Of(DigestAlgorithm::kSha256, data);
    auto w = (*store)->Ingest(digest, size);
    if (!w) continue;  // already exists (a repeat of random bytes is vanishingly unlikely)
    for (std::size_t off = 0; off < size; off += 65536) {
      if (!(*w)->Write(data.substr(off, 65536))) return 4;
    }
    if (rng() % 8 == 0) {
      (*w)->Abort();
      continue;
    }
    if (auto r = (*w)->Commit(); !r) {
      std::fprintf(stderr, "crash child: commit: %s\n", r.error().ToString().c_str());
      return 5;
    }
    std::printf("C %s\n", digest.ToString().c_str());
    std::fflush(stdout);
  }
}
