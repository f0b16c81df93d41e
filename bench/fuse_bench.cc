// fuse_bench: reads through digestd's FUSE mount against native reads of the same bytes, in one
// run (root: it mounts and drops caches).
//   seq          sequential read (1 MiB reads) of a BIG-MiB file: the layer view through the
//                mount vs the backing file object in files/ natively; warm and cold
//                (cold = after `echo 3 > /proc/sys/vm/drop_caches`)
//   rand4k       200k random 4 KiB preads of that file, warm
//   meta         walk + lstat of every entry of a FILES-file layer vs the same tree written
//                natively on the same filesystem, warm
//   smallfile    open + read + close of every regular file of that layer, warm
// Each figure is the median of --runs runs. Output: "bench <name> <value> <unit>" and
// "ratio <name> <fuse/native>" (>1 means the mount is faster).
//
// Usage: fuse_bench [--big-mib N] [--files N] [--runs N] [--dir DIR] [--keep]
//        (defaults: 1024 MiB, 50000 files, 3 runs, /var/tmp)

#include <fcntl.h>
#include <ftw.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <functional>
#include <random>
#include <string>
#include <vector>

#include "fusefs/fuse_mount.h"
#include "store/store.h"
#include "testkit/tar_builder.h"
#include "verify/hasher.h"

namespace {

namespace fs = std::filesystem;
using Clock = std::chrono::steady_clock;
using digestd::testing::TarBuilder;
using digestd::verify::Digest;
using digestd::verify::DigestAlgorithm;
using digestd::verify::Hasher;

[[noreturn]] void Die(const std::string& msg) {
  std::fprintf(stderr, "fuse_bench: %s\n", msg.c_str());
  std::exit(1);
}

template <class T>
T Check(digestd::Result<T> r, const char* what) {
  if (!r) Die(std::string(what) + ": " + r.error().ToString());
  if constexpr (!std::is_void_v<T>) return std::move(*r);
}

double Median(std::vector<double> v) {
  std::sort(v.begin(), v.end());
  return v[v.size() / 2];
}

bool DropCaches() {
  ::sync();
  std::ofstream f("/proc/sys/vm/drop_caches");
  f << "3\n";
  f.flush();
  return static_cast<bool>(f);
}

// Fast deterministic bytes that do not compress or deduplicate.
struct Random {
  std::uint64_t x;
  void Fill(char* p, std::size_t n) {
    for (std::size_t i = 0; i + 8 <= n; i += 8) {
      x ^= x << 13;
      x ^= x >> 7;
      x ^= x << 17;
      std::memcpy(p + i, &x, 8);
    }
  }
};

// Seconds to read `path` sequentially with 1 MiB reads; checks the byte count.
double SeqRead(const std::string& path, std::uint64_t want) {
  static std::vector<char> buf(1 << 20);
  const auto t0 = Clock::now();
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("open " + path + ": " + std::strerror(errno));
  std::uint64_t total = 0;
  for (;;) {
    const ssize_t n = ::read(fd, buf.data(), buf.size());
    if (n < 0) Die("read " + path + ": " + std::strerror(errno));
    if (n == 0) break;
    total += static_cast<std::uint64_t>(n);
  }
  ::close(fd);
  if (total != want) Die("short read of " + path);
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

double RandRead(const std::string& path, std::uint64_t size, int ops) {
  const int fd = ::open(path.c_str(), O_RDONLY);
  if (fd < 0) Die("open " + path);
  std::mt19937_64 rng(42);
  const std::uint64_t blocks = size / 4096;
  char buf[4096];
  const auto t0 = Clock::now();
  for (int i = 0; i < ops; ++i) {
    const off_t off = static_cast<off_t>((rng() % blocks) * 4096);
    if (::pread(fd, buf, sizeof(buf), off) != static_cast<ssize_t>(sizeof(buf))) Die("pread");
  }
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  ::close(fd);
  return s;
}

std::vector<std::string>* g_files = nullptr;
std::uint64_t g_entries = 0;
int Visit(const char* path, const struct stat* st, int flag, struct FTW*) {
  ++g_entries;
  if (g_files && flag == FTW_F && S_ISREG(st->st_mode)) g_files->push_back(path);
  return 0;
}

// Walk + lstat of every entry (nftw with FTW_PHYS stats each one); returns seconds.
double Walk(const std::string& root, std::vector<std::string>* files, std::uint64_t* entries) {
  g_files = files;
  g_entries = 0;
  const auto t0 = Clock::now();
  if (::nftw(root.c_str(), Visit, 64, FTW_PHYS) != 0) Die("nftw " + root);
  const double s = std::chrono::duration<double>(Clock::now() - t0).count();
  if (entries) *entries = g_entries;
  g_files = nullptr;
  return s;
}

double ReadAll(const std::vector<std::string>& files) {
  static std::vector<char> buf(1 << 16);
  const auto t0 = Clock::now();
  for (const auto& f : files) {
    const int fd = ::open(f.c_str(), O_RDONLY);
    if (fd < 0) Die("open " + f + ": " + std::strerror(errno));
    while (::read(fd, buf.data(), buf.size()) > 0) {
    }
    ::close(fd);
  }
  return std::chrono::duration<double>(Clock::now() - t0).count();
}

void Print(const char* name, double value, const char* unit) {
  std::printf("bench %s %.1f %s\n", name, value, unit);
  std::fflush(stdout);
}
void Ratio(const char* name, double x) {
  std::printf("ratio %s %.3f\n", name, x);
  std::fflush(stdout);
}

// Ingests the blob in `path` (digest known) and unpacks it as a plain tar layer.
void IngestLayer(digestd::store::Store& store, const std::string& path, const Digest& digest,
                 std::uint64_t size) {
  auto w = Check(store.Ingest(digest, size,
                              {.media_type = "application/vnd.oci.image.layer.v1.tar"}),
                 "ingest");
  std::vector<char> buf(1 << 20);
  std::ifstream in(path, std::ios::binary);
  while (in) {
    in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
    const auto n = static_cast<std::size_t>(in.gcount());
    if (n == 0) break;
    Check(w->Write(std::string_view(buf.data(), n)), "write");
  }
  Check(w->Commit(), "commit");
  Check(store.UnpackLayer(digest, digest), "unpack");  // plain tar: diff_id == digest
}

}  // namespace

int main(int argc, char** argv) {
  std::uint64_t big_mib = 1024;
  std::size_t nfiles = 50000;
  int runs = 3;
  std::string dir = "/var/tmp";
  bool keep = false;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto next = [&]() -> std::string {
      if (i + 1 >= argc) Die("missing value for " + a);
      return argv[++i];
    };
    if (a == "--big-mib") big_mib = std::stoull(next());
    else if (a == "--files") nfiles = std::stoull(next());
    else if (a == "--runs") runs = std::stoi(next());
    else if (a == "--dir") dir = next();
    else if (a == "--keep") keep = true;
    else Die("unknown argument " + a);
  }
  if (::geteuid() != 0) Die("needs root (mounts FUSE and drops caches)");
  char tmpl[4096];
  std::snprintf(tmpl, sizeof(tmpl), "%s/fuse-bench-XXXXXX", dir.c_str());
  if (::mkdtemp(tmpl) == nullptr) Die("mkdtemp in " + dir);
  const fs::path root = tmpl;
  auto store = Check(digestd::store::Store::Open({.root = root / "store"}), "open store");

  // 1. A layer holding one BIG-MiB file of random bytes, written as a plain tar.
  const std::uint64_t big = big_mib << 20;
  Digest big_layer = Hasher::Of(DigestAlgorithm::kSha256, "");
  Digest big_content = big_layer;
  {
    const std::string tar_path = (root / "big.tar").string();
    std::ofstream out(tar_path, std::ios::binary);
    auto layer_hasher = Check(Hasher::Create(DigestAlgorithm::kSha256), "hasher");
    auto content_hasher = Check(Hasher::Create(DigestAlgorithm::kSha256), "hasher");
    auto put = [&](std::string_view s, bool content) {
      out.write(s.data(), static_cast<std::streamsize>(s.size()));
      layer_hasher.Update(s);
      if (content) content_hasher.Update(s);
    };
    put(TarBuilder::RegularHeader("big", big), false);
    std::vector<char> chunk(1 << 20);
    Random rng{0x9e3779b97f4a7c15ull};
    for (std::uint64_t done = 0; done < big; done += chunk.size()) {
      rng.Fill(chunk.data(), chunk.size());
      put(std::string_view(chunk.data(), std::min<std::uint64_t>(chunk.size(), big - done)), true);
    }
    put(std::string((512 - big % 512) % 512 + 1024, '\0'), false);
    out.close();
    big_layer = layer_hasher.Finish();
    big_content = content_hasher.Finish();
    IngestLayer(*store, tar_path, big_layer, fs::file_size(tar_path));
    fs::remove(tar_path);
  }

  // 2. A layer of FILES small files (0.5-4 KiB, distinct) in directories of 100, and the same
  //    tree written natively.
  Digest small_layer = big_layer;
  const fs::path native = root / "native";
  {
    TarBuilder t;
    Random rng{12345};
    std::vector<char> data(4096);
    for (std::size_t i = 0; i < nfiles; ++i) {
      char dirname[32], name[64];
      std::snprintf(dirname, sizeof(dirname), "d%04zu", i / 100);
      std::snprintf(name, sizeof(name), "%s/f%06zu", dirname, i);
      if (i % 100 == 0) {
        t.Dir(std::string(dirname) + "/");
        fs::create_directories(native / dirname);
      }
      const std::size_t n = 512 + (i * 2654435761u) % 3585;
      rng.Fill(data.data(), data.size());
      std::memcpy(data.data(), &i, sizeof(i));  // distinct content
      t.File(name, std::string_view(data.data(), n));
      std::ofstream(native / name, std::ios::binary).write(data.data(), static_cast<std::streamsize>(n));
    }
    const std::string tar = t.Finish();
    small_layer = Hasher::Of(DigestAlgorithm::kSha256, tar);
    const std::string tar_path = (root / "small.tar").string();
    std::ofstream(tar_path, std::ios::binary) << tar;
    IngestLayer(*store, tar_path, small_layer, tar.size());
    fs::remove(tar_path);
  }

  // 3. The mount.
  const std::string mnt = (root / "mnt").string();
  // Two mounts of the same store: the read path through the daemon (the figures without a
  // suffix) and FUSE passthrough (the *_passthrough figures).
  const digestd::fusefs::MountOptions mount_options{.mountpoint = mnt, .passthrough = false};
  auto mount = Check(digestd::fusefs::FuseMount::Mount(*store, mount_options), "mount");
  const std::string mnt_pt = (root / "mnt-pt").string();
  auto mount_pt = Check(digestd::fusefs::FuseMount::Mount(*store, {.mountpoint = mnt_pt}), "mount");
  if (!mount_pt->passthrough_active()) std::printf("# passthrough: refused by this kernel\n");
  const std::string pt_big = mnt_pt + "/layers/sha256/" + std::string(big_layer.hex()) + "/big";
  const std::string fuse_big = mnt + "/layers/sha256/" + std::string(big_layer.hex()) + "/big";
  const std::string native_big = (root / "store/files/sha256" /
                                  std::string(big_content.hex().substr(0, 2)) /
                                  std::string(big_content.hex())).string();
  const std::string fuse_small = mnt + "/layers/sha256/" + std::string(small_layer.hex());
  std::printf("# mount options: ro,nosuid,nodev,allow_other,default_permissions; read_ahead_kb=%u "
              "max_threads=%u no_open=%d keep_cache=1 tree timeouts=%.0fs\n",
              mount_options.read_ahead_kb, mount_options.max_threads, mount_options.no_open ? 1 : 0,
              mount_options.tree_timeout_s);

  const double mib = static_cast<double>(big) / (1 << 20);
  // Every figure interleaves the three files within each run (native, FUSE, passthrough), so
  // drift of this virtual machine's disk and caches between passes hits all three alike.
  const std::vector<std::string> trio = {native_big, fuse_big, pt_big};
  auto interleaved = [&](const std::function<double(const std::string&)>& one) {
    std::vector<std::vector<double>> v(trio.size());
    for (int r = 0; r < runs; ++r) {
      for (std::size_t i = 0; i < trio.size(); ++i) v[i].push_back(one(trio[i]));
    }
    std::vector<double> med;
    for (auto& x : v) med.push_back(Median(x));
    return med;
  };
  for (const auto& p : trio) SeqRead(p, big);  // warm-up
  const auto warm = interleaved([&](const std::string& p) { return mib / SeqRead(p, big); });
  const auto cold = interleaved([&](const std::string& p) {
    if (!DropCaches()) Die("drop_caches failed");
    return mib / SeqRead(p, big);
  });
  const double seq_warm_native = warm[0], seq_warm_fuse = warm[1], seq_warm_pt = warm[2];
  const double seq_cold_native = cold[0], seq_cold_fuse = cold[1], seq_cold_pt = cold[2];
  Print("seq_warm_native", seq_warm_native, "MB/s");
  Print("seq_warm_fuse", seq_warm_fuse, "MB/s");
  Print("seq_cold_native", seq_cold_native, "MB/s");
  Print("seq_cold_fuse", seq_cold_fuse, "MB/s");

  // Random reads: 200k preads per file and run take about 0.2 s each.
  const int ops = 200000;
  for (const auto& p : trio) SeqRead(p, big);  // warm the whole files again
  const auto rnd = interleaved([&](const std::string& p) { return ops / RandRead(p, big, ops); });
  const double rand_native = rnd[0], rand_fuse = rnd[1], rand_pt = rnd[2];
  Print("rand4k_warm_native", rand_native, "ops/s");
  Print("rand4k_warm_fuse", rand_fuse, "ops/s");

  std::vector<std::string> native_files, fuse_files;
  std::uint64_t native_entries = 0, fuse_entries = 0;
  Walk(native.string(), &native_files, &native_entries);
  Walk(fuse_small, &fuse_files, &fuse_entries);
  if (native_files.size() != nfiles || fuse_files.size() != nfiles) {
    Die("walk found " + std::to_string(native_files.size()) + " native and " +
        std::to_string(fuse_files.size()) + " mounted files, want " + std::to_string(nfiles));
  }
  auto meta = [&](const std::string& path, std::uint64_t entries) {
    std::vector<double> v;
    for (int r = 0; r < runs; ++r) v.push_back(static_cast<double>(entries) / Walk(path, nullptr, nullptr));
    return Median(v);
  };
  const double meta_native = meta(native.string(), native_entries);
  const double meta_fuse = meta(fuse_small, fuse_entries);
  Print("meta_warm_native", meta_native, "entries/s");
  Print("meta_warm_fuse", meta_fuse, "entries/s");

  auto small = [&](const std::vector<std::string>& files) {
    ReadAll(files);  // warm-up
    std::vector<double> v;
    for (int r = 0; r < runs; ++r) v.push_back(static_cast<double>(files.size()) / ReadAll(files));
    return Median(v);
  };
  const double small_native = small(native_files);
  const double small_fuse = small(fuse_files);
  Print("smallfile_warm_native", small_native, "files/s");
  Print("smallfile_warm_fuse", small_fuse, "files/s");

  const auto& st = mount->stats();
  std::printf("# fuse ops: lookups=%llu getattrs=%llu readdirs=%llu opens=%llu reads=%llu\n",
              static_cast<unsigned long long>(st.lookups.load()),
              static_cast<unsigned long long>(st.getattrs.load()),
              static_cast<unsigned long long>(st.readdirs.load()),
              static_cast<unsigned long long>(st.opens.load()),
              static_cast<unsigned long long>(st.reads.load()));
  Ratio("fuse_seq_warm", seq_warm_fuse / seq_warm_native);
  Ratio("fuse_seq_cold", seq_cold_fuse / seq_cold_native);
  Ratio("fuse_rand4k_warm", rand_fuse / rand_native);
  Ratio("fuse_meta", meta_fuse / meta_native);
  Ratio("fuse_smallfile_warm", small_fuse / small_native);
  const auto& pst = mount_pt->stats();
  std::printf("# passthrough mount: daemon reads=%llu passthrough opens=%llu fallbacks=%llu\n",
              static_cast<unsigned long long>(pst.reads.load()),
              static_cast<unsigned long long>(pst.passthrough_opens.load()),
              static_cast<unsigned long long>(pst.passthrough_fallbacks.load()));
  // Only what was measured: the *_passthrough figures are printed when the kernel accepted
  // passthrough and every open of the second mount was served by its backing file.
  if (mount_pt->passthrough_active() && pst.passthrough_opens.load() > 0 &&
      pst.passthrough_fallbacks.load() == 0) {
    Print("seq_warm_passthrough", seq_warm_pt, "MB/s");
    Print("seq_cold_passthrough", seq_cold_pt, "MB/s");
    Print("rand4k_warm_passthrough", rand_pt, "ops/s");
    Ratio("fuse_seq_warm_passthrough", seq_warm_pt / seq_warm_native);
    Ratio("fuse_seq_cold_passthrough", seq_cold_pt / seq_cold_native);
    Ratio("fuse_rand4k_warm_passthrough", rand_pt / rand_native);
  } else {
    std::printf("# passthrough figures not printed: the second mount did not read through "
                "passthrough (refused by the kernel, or opens fell back to the daemon)\n");
  }

  Check(mount->Unmount(), "unmount");
  Check(mount_pt->Unmount(), "unmount");
  mount_pt.reset();
  mount.reset();
  store.reset();
  if (!keep) fs::remove_all(root);
  return 0;
}
