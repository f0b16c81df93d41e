// mount_reader: reads files through a mount in a loop until told to stop, for the restart tests
// and bench/restart_bench.sh. The first pass records every file's bytes; each later pass opens,
// reads and closes every file again (and re-reads one file held open all along), and compares.
// Every failure is printed at once; at the end one line:
//   "reader loops=N reads=R errors=E max_stall_ms=S"
// (S: the longest single open+read+close or stat seen, in milliseconds).
//
//   mount_reader STOPFILE PATH...     stops when STOPFILE exists
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <cstdio>
#include <cstring>
#include <string>
#include <vector>

namespace {

bool ReadAll(int fd, std::string& out) {
  out.clear();
  char buf[65536];
  off_t off = 0;
  for (;;) {
    const ssize_t n = ::pread(fd, buf, sizeof(buf), off);
    if (n < 0) {
      if (errno == EINTR) continue;
      return false;
    }
    if (n == 0) return true;
    out.append(buf, static_cast<std::size_t>(n));
    off += n;
  }
}

bool ReadPath(const std::string& path, std::string& out) {
  const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) return false;
  const bool ok = ReadAll(fd, out);
  ::close(fd);
  return ok;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc < 3) {
    std::fprintf(stderr, "usage: mount_reader STOPFILE PATH...\n");
    return 2;
  }
  const std::string stop = argv[1];
  std::vector<std::string> paths(argv + 2, argv + argc);
  std::vector<std::string> want(paths.size());
  for (std::size_t i = 0; i < paths.size(); ++i) {
    if (!ReadPath(paths[i], want[i])) {
      std::fprintf(stderr, "reader: first read of %s: %s\n", paths[i].c_str(), std::strerror(errno));
      return 1;
    }
  }
  const int held = ::open(paths[0].c_str(), O_RDONLY | O_CLOEXEC);
  if (held < 0) return 1;
  std::printf("reader started\n");
  std::fflush(stdout);
  using Clock = std::chrono::steady_clock;
  std::uint64_t loops = 0, reads = 0, errors = 0;
  double max_stall_ms = 0;
  auto timed = [&](auto&& fn) {
    const auto t0 = Clock::now();
    const bool ok = fn();
    const double ms = std::chrono::duration<double, std::milli>(Clock::now() - t0).count();
    if (ms > max_stall_ms) max_stall_ms = ms;
    ++reads;
    return ok;
  };
  std::string got;
  struct stat st {};
  while (::access(stop.c_str(), F_OK) != 0) {
    for (std::size_t i = 0; i < paths.size(); ++i) {
      if (!timed([&] { return ReadPath(paths[i], got); }) || got != want[i]) {
        ++errors;
        std::fprintf(stderr, "reader: %s: %s\n", paths[i].c_str(),
                     got != want[i] ? "wrong bytes" : std::strerror(errno));
      }
      if (!timed([&] { return ::stat(paths[i].c_str(), &st) == 0; })) {
        ++errors;
        std::fprintf(stderr, "reader: stat %s: %s\n", paths[i].c_str(), std::strerror(errno));
      }
    }
    if (!timed([&] { return ReadAll(held, got); }) || got != want[0]) {
      ++errors;
      std::fprintf(stderr, "reader: held %s: %s\n", paths[0].c_str(), std::strerror(errno));
    }
    ++loops;
  }
  ::close(held);
  std::printf("reader loops=%llu reads=%llu errors=%llu max_stall_ms=%.1f\n",
              static_cast<unsigned long long>(loops), static_cast<unsigned long long>(reads),
              static_cast<unsigned long long>(errors), max_stall_ms);
  return errors == 0 ? 0 : 1;
}
