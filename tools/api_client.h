#pragma once

// A small blocking client for digestd's control API (HTTP/1.1 over a Unix socket), for
// digestctl. One request per connection; chunked responses are decoded as they arrive and handed
// over line by line (the NDJSON of a streamed pull).

#include <functional>
#include <string>
#include <string_view>

#include "common/error.h"

namespace digestd::tools {

struct ApiResponse {
  int status = 0;
  std::string content_type;
  std::string body;  // whole body (also when lines were streamed to on_line)
};

// `on_line` (optional) gets each complete line of the body as soon as it arrives.
Result<ApiResponse> CallApi(const std::string& socket_path, std::string_view method,
                            std::string_view target, std::string_view body,
                            const std::function<void(std::string_view)>& on_line = {});

}  // namespace digestd::tools
