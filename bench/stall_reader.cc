// stall_reader: the reader of bench/restart_bench.sh. Until STOPFILE exists: a 4 KiB read at a
// random offset of BIGFILE (opened once and held, as a running program holds its files), then an
// open + read + close of a random file under SMALLDIR. Each operation is timed; at the end:
//   "stall_reader ops=N errors=E max_ms=M p99_ms=P"
// M is the longest an operation waited (a restart shows up as one long wait), E failed or short
// operations (must stay 0 across restarts).
//
//   stall_reader STOPFILE BIGFILE SMALLDIR
#include <dirent.h>
#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <ctime>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

int main(int argc, char** argv) {
  if (argc != 4) {
    std::fprintf(stderr, "usage: stall_reader STOPFILE BIGFILE SMALLDIR\n");
    return 2;
  }
  const std::string stop = argv[1];
  const int big = ::open(argv[2], O_RDONLY | O_CLOEXEC);
  struct stat st {};
  if (big < 0 || ::fstat(big, &st) != 0 || st.st_size < 4096) {
    std::perror("stall_reader: big file");
    return 1;
  }
  std::vector<std::string> small;
  if (DIR* d = ::opendir(argv[3])) {
    while (dirent* e = ::readdir(d)) {
      if (e->d_name[0] != '.') small.push_back(std::string(argv[3]) + "/" + e->d_name);
    }
    ::closedir(d);
  }
  if (small.empty()) {
    std::fprintf(stderr, "stall_reader: no files under %s\n", argv[3]);
    return 1;
  }
  std::mt19937_64 rng(42);
  using Clock = std::chrono::steady_clock;
  std::vector<float> ms;
  std::uint64_t errors = 0;
  char buf[4096];
  std::printf("stall_reader started\n");
  std::fflush(stdout);
  // Operations slower than 20 ms are listed with the wall-clock time they started (to line them
  // up with digestd's log): "stall_reader slow read|open MS ms at HH:MM:SS.mmm".
  auto timed = [&](const char* what, auto&& op) {
    const auto wall = std::chrono::system_clock::now();
    const auto t0 = Clock::now();
    if (!op()) ++errors;
    const float took = std::chrono::duration<float, std::milli>(Clock::now() - t0).count();
    ms.push_back(took);
    if (took > 20) {
      const std::time_t secs = std::chrono::system_clock::to_time_t(wall);
      std::tm tm{};
      ::localtime_r(&secs, &tm);
      const auto milli = std::chrono::duration_cast<std::chrono::milliseconds>(wall.time_since_epoch()).count() % 1000;
      std::fprintf(stderr, "stall_reader slow %s %.1f ms at %02d:%02d:%02d.%03lld\n", what, took,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, static_cast<long long>(milli));
    }
  };
  while (::access(stop.c_str(), F_OK) != 0) {
    const off_t off = static_cast<off_t>(rng() % static_cast<std::uint64_t>(st.st_size / 4096)) * 4096;
    timed("read", [&] { return ::pread(big, buf, sizeof(buf), off) == static_cast<ssize_t>(sizeof(buf)); });
    const std::string& path = small[rng() % small.size()];
    timed("open", [&] {
      const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
      if (fd < 0) return false;
      const bool ok = ::read(fd, buf, sizeof(buf)) > 0;
      ::close(fd);
      return ok;
    });
  }
  std::sort(ms.begin(), ms.end());
  const float max = ms.empty() ? 0 : ms.back();
  const float p99 = ms.empty() ? 0 : ms[ms.size() * 99 / 100];
  std::printf("stall_reader ops=%zu errors=%llu max_ms=%.1f p99_ms=%.3f\n", ms.size(),
              static_cast<unsigned long long>(errors), max, p99);
  return 0;
}
