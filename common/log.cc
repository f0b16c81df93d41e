#include "common/log.h"

#include <mutex>
#include <string>

#include <spdlog/sinks/stdout_sinks.h>

namespace digestd {

std::shared_ptr<spdlog::logger> Logger(std::string_view module) {
  static std::mutex mu;
  std::lock_guard lock(mu);
  const std::string name(module);
  if (auto existing = spdlog::get(name)) return existing;
  auto logger = spdlog::stderr_logger_mt(name);
  logger->set_pattern("%Y-%m-%dT%H:%M:%S.%e %l %n: %v");
  return logger;
}

}  // namespace digestd
