#include "store/audit_event.h"

namespace digestd::store {

std::string AuditEvent::ToJson() const {
  nlohmann::json j = nlohmann::json::object();
  j["type"] = type;
  j["time"] = time;
  if (actor_uid) {
    j["actor"] = *actor_uid;
  } else {
    j["actor"] = component;
  }
  if (pid) j["pid"] = *pid;
  auto put = [&j](const char* key, const std::string& value) {
    if (!value.empty()) j[key] = value;
  };
  put("reference", reference);
  put("digest", digest);
  put("tenant", tenant);
  put("reason", reason);
  if (details.is_object()) {
    for (const auto& [key, value] : details.items()) {
      if (!j.contains(key)) j[key] = value;
    }
  }
  return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

}  // namespace digestd::store
