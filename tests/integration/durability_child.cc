// Child of the durability test: one image committed through an image transaction, then one
// single blob committed, each between markers written to stderr (seen in the strace log).
// Usage: durability_child ROOT

#include <unistd.h>

#include <cstdio>
#include <cstring>

#include "store/store.h"
#include "testing/txn_image.h"

namespace {

void Mark(const char* text) {
  // One write(2) per marker: the checker finds it in the trace.
  (void)!::write(STDERR_FILENO, text, std::strlen(text));
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) return 2;
  auto store = digestd::store::Store::Open({.root = argv[1]});
  if (!store) {
    std::fprintf(stderr, "durability child: %s\n", store.error().ToString().c_str());
    return 3;
  }
  using digestd::testing::MakeTar;
  const auto image = digestd::testing::BuildImage(
      "registry.test/durable:v1",
      {MakeTar({{"bin/tool", std::string(3u << 20, 't')}, {"etc/conf", "a=1\n"}}),
       MakeTar({{"app/data", std::string(100000, 'd')}})});
  Mark("MARK image-begin\n");
  if (auto r = digestd::testing::PullImage(**store, image); !r) {
    std::fprintf(stderr, "durability child: %s\n", r.error().ToString().c_str());
    return 4;
  }
  Mark("MARK image-end\n");
  const std::string blob(200000, 'b');
  const auto digest =
      digestd::verify::Hasher::Of(digestd::verify::DigestAlgorithm::kSha256, blob);
  Mark("MARK blob-begin\n");
  if (auto r = (*store)->PutBlob(digest, blob); !r) {
    std::fprintf(stderr, "durability child: %s\n", r.error().ToString().c_str());
    return 5;
  }
  Mark("MARK blob-end\n");
  return 0;
}
