#include "tools/api_client.h"

#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <optional>

#include "common/unique_fd.h"

namespace digestd::tools {
namespace {

Error ApiError(std::string context) {
  return MakeError(Module::kTools, Errc::kIo, std::move(context));
}

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

// Incremental body decoding (identity or chunked) that emits complete lines.
class BodyDecoder {
 public:
  BodyDecoder(bool chunked, const std::function<void(std::string_view)>& on_line)
      : chunked_(chunked), on_line_(on_line) {}

  // Returns false on a malformed chunk stream.
  bool Feed(std::string_view data) {
    if (!chunked_) {
      Emit(data);
      return true;
    }
    raw_.append(data);
    for (;;) {
      if (chunk_left_ == 0) {
        if (done_) return true;
        const auto eol = raw_.find("\r\n");
        if (eol == std::string::npos) return raw_.size() < 1024;
        std::size_t size = 0;
        try {
          size = std::stoul(raw_.substr(0, eol), nullptr, 16);
        } catch (const std::exception&) {
          return false;
        }
        raw_.erase(0, eol + 2);
        if (size == 0) {
          done_ = true;
          return true;
        }
        chunk_left_ = size + 2;  // data + CRLF
      }
      if (raw_.empty()) return true;
      const std::size_t n = std::min(chunk_left_, raw_.size());
      // The trailing CRLF of a chunk is not data.
      const std::size_t data_n = chunk_left_ > 2 ? std::min(n, chunk_left_ - 2) : 0;
      Emit(std::string_view(raw_).substr(0, data_n));
      raw_.erase(0, n);
      chunk_left_ -= n;
    }
  }

  void Finish() {
    if (!line_.empty() && on_line_) on_line_(line_);
    line_.clear();
  }
  const std::string& body() const { return body_; }

 private:
  void Emit(std::string_view data) {
    body_.append(data);
    if (!on_line_) return;
    line_.append(data);
    std::size_t pos;
    while ((pos = line_.find('\n')) != std::string::npos) {
      on_line_(std::string_view(line_).substr(0, pos));
      line_.erase(0, pos + 1);
    }
  }

  bool chunked_;
  const std::function<void(std::string_view)>& on_line_;
  std::string raw_, line_, body_;
  std::size_t chunk_left_ = 0;
  bool done_ = false;
};

}  // namespace

Result<ApiResponse> CallApi(const std::string& socket_path, std::string_view method,
                            std::string_view target, std::string_view body,
                            const std::function<void(std::string_view)>& on_line) {
  UniqueFd fd(::socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0));
  if (!fd) return SysError(Module::kTools, "socket");
  sockaddr_un addr{};
  addr.sun_family = AF_UNIX;
  if (socket_path.size() >= sizeof(addr.sun_path)) return ApiError("socket path too long");
  std::memcpy(addr.sun_path, socket_path.data(), socket_path.size());
  if (::connect(fd.Get(), reinterpret_cast<sockaddr*>(&addr), sizeof(addr)) != 0) {
    return SysError(Module::kTools, "connect to digestd at " + Quote(socket_path) +
                                        " (is it running? see --socket)");
  }
  std::string req = std::string(method) + " " + std::string(target) +
                    " HTTP/1.1\r\nHost: digestd\r\nConnection: close\r\n"
                    "Accept: application/json, application/x-ndjson\r\n";
  if (!body.empty() || method == "POST") {
    req += "Content-Type: application/json\r\nContent-Length: " + std::to_string(body.size()) + "\r\n";
  }
  req += "\r\n";
  req.append(body);
  for (std::size_t off = 0; off < req.size();) {
    const ssize_t n = ::send(fd.Get(), req.data() + off, req.size() - off, MSG_NOSIGNAL);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(Module::kTools, "send request");
    }
    off += static_cast<std::size_t>(n);
  }
  ApiResponse resp;
  std::string head;
  std::optional<BodyDecoder> decoder;
  char buf[65536];
  for (;;) {
    const ssize_t n = ::recv(fd.Get(), buf, sizeof(buf), 0);
    if (n < 0) {
      if (errno == EINTR) continue;
      return SysError(Module::kTools, "read response");
    }
    if (n == 0) break;
    std::string_view data(buf, static_cast<std::size_t>(n));
    if (!decoder) {
      head.append(data);
      const auto end = head.find("\r\n\r\n");
      if (end == std::string::npos) {
        if (head.size() > (64u << 10)) return ApiError("response headers too large");
        continue;
      }
      const std::string rest = head.substr(end + 4);
      head.resize(end);
      if (head.size() < 12 || !head.starts_with("HTTP/1.")) return ApiError("not an HTTP response");
      resp.status = std::atoi(head.c_str() + 9);
      bool chunked = false;
      std::size_t pos = head.find("\r\n");
      while (pos != std::string::npos) {
        const auto next = head.find("\r\n", pos + 2);
        const std::string line = head.substr(pos + 2, next == std::string::npos ? std::string::npos : next - pos - 2);
        const auto colon = line.find(':');
        if (colon != std::string::npos) {
          const std::string name = Lower(line.substr(0, colon));
          std::string value = line.substr(colon + 1);
          while (!value.empty() && value.front() == ' ') value.erase(0, 1);
          if (name == "transfer-encoding" && Lower(value).find("chunked") != std::string::npos) chunked = true;
          if (name == "content-type") resp.content_type = value;
        }
        pos = next;
      }
      decoder.emplace(chunked, on_line);
      if (!decoder->Feed(rest)) return ApiError("malformed chunked response");
      continue;
    }
    if (!decoder->Feed(data)) return ApiError("malformed chunked response");
  }
  if (!decoder) return ApiError("connection closed before a response");
  decoder->Finish();
  resp.body = decoder->body();
  return resp;
}

}  // namespace digestd::tools
