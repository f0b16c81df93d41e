#include "common/log.h"

#include <mutex>
#include <string>

#include <spdlog/sinks/stdout_sinks.h>

namespace digestd {

std::shared_ptr<spdlog::logger> Logger(Module module, std::string_view area) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  std::string name(ToString(module));
  if (!area.empty()) name += "." + std::string(area);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = spdlog::stderr_logger_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %n: %v");
  return logger;
}

}  // namespace digestd
