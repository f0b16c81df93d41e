// Child process of the store crash test: ingests blobs in a loop and reports each digest on stdout
// right after its Commit() returned. The parent SIGKILLs it at random moments.
// Usage: store_crash_child ROOT SEED            single blobs
//        store_crash_child ROOT SEED images     4 threads pulling (1 in 4 failing), removing and
//                                               collecting 12 images over shared base layers
//                                               through image transactions; "I <n>" after image
//                                               n's commit returned, "R <n>" before its removal

#include <unistd.h>

#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <vector>

#include <mutex>
#include <thread>

#include "store/store.h"
#include "testing/crash_images.h"
#include "verify/hasher.h"

using digestd::store::Store;
using digestd::store::StoreOptions;
using digestd::verify::DigestAlgorithm;
using digestd::verify::Hasher;

namespace {

std::mutex out_mu;

void Report(char what, std::size_t n) {
  std::lock_guard lock(out_mu);
  std::printf("%c %zu\n", what, n);
  std::fflush(stdout);
}

// Thread t owns images t, t+4, t+8 (so its reports about an image are in the order things
// happened to it); the base layers are shared by every thread.
[[noreturn]] void PullLoop(Store& store, const std::vector<digestd::testing::BuiltImage>& images,
                           unsigned t, std::uint64_t seed) {
  std::mt19937_64 rng(seed + t);
  for (;;) {
    const std::size_t n = t + 4 * (rng() % 3);
    const auto op = rng() % 8;
    if (op < 5) {
      const bool fail = rng() % 4 == 0;
      auto r = digestd::testing::PullImage(store, images[n], t % 2 ? "team-a" : "",
                                           fail ? static_cast<int>(images[n].layers.size() - 1) : -1);
      if (r && !fail) Report('I', n);
    } else if (op < 7) {
      Report('R', n);
      (void)store.RemoveImage(images[n].manifest);
    } else {
      (void)store.CollectGarbage(false);
    }
  }
}

// Opens the store and says so ("S"): the parent times most kills from there.
digestd::Result<digestd::store::StorePtr> OpenStore(const char* root) {
  auto store = Store::Open(StoreOptions{.root = root, .writeback_interval = 256 << 10});
  if (!store) {
    std::fprintf(stderr, "crash child: %s\n", store.error().ToString().c_str());
    return store;
  }
  std::printf("S\n");
  std::fflush(stdout);
  return store;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc == 4 && std::string(argv[3]) == "images") {
    const std::uint64_t seed = std::strtoull(argv[2], nullptr, 10);
    const auto images = digestd::testing::CrashImages();
    auto store = OpenStore(argv[1]);
    if (!store) return 3;
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < 4; ++t) {
      threads.emplace_back([&, t] { PullLoop(**store, images, t, seed); });
    }
    for (auto& th : threads) th.join();
    return 0;
  }
  if (argc != 3) return 2;
  std::mt19937_64 rng(std::strtoull(argv[2], nullptr, 10));
  auto store = OpenStore(argv[1]);
  if (!store) return 3;
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
