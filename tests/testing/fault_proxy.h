#pragma once

// A fault-injecting HTTP/1.1 proxy on a free loopback port, in front of a real server: for faults
// the real registry cannot produce (truncated or corrupted bodies, lying headers, stalls, resets,
// error bursts, redirect loops). Every response is sent with "Connection: close".
//
// The test supplies a rule: given the request, which fault to apply. Requests and their headers
// are recorded so tests can assert on them (e.g. that no Authorization crossed hosts).

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <functional>
#include <mutex>
#include <string>
#include <thread>
#include <vector>

#include "testing/process_util.h"

namespace digestd::testing {

struct ProxyRequest {
  std::string method;
  std::string target;
  std::string head;  // request line and headers as received
  int seq = 0;       // how many requests with this method+target came before (0-based)
};

struct Fault {
  enum Kind {
    kPass,
    kTruncate,        // send the head and half the body, then close
    kFlipByte,        // flip one byte in the middle of the body
    kWrongLength,     // declare Content-Length + 10
    kSlowDrip,        // send the head, then one body byte per `drip_ms`
    kStatus,          // answer `status` with an empty body
    kRedirect,        // answer 307 with Location: `location`
    kReplaceBody,     // send `body` instead (Content-Length adjusted), keep the headers
    kSetHeader,       // add/replace header `header_name: header_value`
    kChallengeBasic,  // 401 with a Basic challenge unless the request carries Authorization
    kChallengeBearer, // 401 with a Bearer challenge (realm `location`) unless it carries `body`
    kServe,           // answer 200 with `body` without asking upstream (a token server)
  };
  Kind kind = kPass;
  int status = 500;
  std::string location;
  std::string body;
  std::string header_name, header_value;
  int drip_ms = 200;
};

class FaultProxy {
 public:
  using Rule = std::function<Fault(const ProxyRequest&)>;

  FaultProxy(int upstream_port, Rule rule) : upstream_(upstream_port), rule_(std::move(rule)) {
    listen_fd_ = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    int one = 1;
    ::setsockopt(listen_fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(listen_fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(listen_fd_, reinterpret_cast<sockaddr*>(&a), &len);
    port_ = ntohs(a.sin_port);
    ::listen(listen_fd_, 64);
    acceptor_ = std::thread([this] { AcceptLoop(); });
  }
  ~FaultProxy() {
    stop_ = true;
    ::shutdown(listen_fd_, SHUT_RDWR);
    ::close(listen_fd_);
    acceptor_.join();
    std::lock_guard lock(mu_);
    for (auto& t : workers_) t.join();
  }

  int port() const { return port_; }
  std::string host() const { return "127.0.0.1:" + std::to_string(port_); }
  std::vector<ProxyRequest> requests() const {
    std::lock_guard lock(mu_);
    return requests_;
  }

 private:
  static bool ReadUntil(int fd, std::string& buf, std::string_view marker, std::size_t cap) {
    char tmp[65536];
    while (buf.find(marker) == std::string::npos) {
      if (buf.size() > cap) return false;
      pollfd p{fd, POLLIN, 0};
      if (::poll(&p, 1, 10000) <= 0) return false;
      const ssize_t n = ::read(fd, tmp, sizeof tmp);
      if (n <= 0) return false;
      buf.append(tmp, static_cast<std::size_t>(n));
    }
    return true;
  }
  static void WriteAll(int fd, std::string_view s) {
    while (!s.empty()) {
      const ssize_t n = ::send(fd, s.data(), s.size(), MSG_NOSIGNAL);
      if (n <= 0) return;
      s.remove_prefix(static_cast<std::size_t>(n));
    }
  }

  void AcceptLoop() {
    while (!stop_) {
      const int c = ::accept4(listen_fd_, nullptr, nullptr, SOCK_CLOEXEC);
      if (c < 0) {
        if (stop_) return;
        continue;
      }
      std::lock_guard lock(mu_);
      workers_.emplace_back([this, c] {
        Handle(c);
        ::close(c);
      });
    }
  }

  void Handle(int client) {
    std::string req;
    if (!ReadUntil(client, req, "\r\n\r\n", 1 << 20)) return;
    const auto head_end = req.find("\r\n\r\n");
    ProxyRequest pr;
    pr.head = req.substr(0, head_end);
    const auto sp1 = pr.head.find(' '), sp2 = pr.head.find(' ', sp1 + 1);
    pr.method = pr.head.substr(0, sp1);
    pr.target = pr.head.substr(sp1 + 1, sp2 - sp1 - 1);
    {
      std::lock_guard lock(mu_);
      for (const auto& r : requests_) pr.seq += (r.method == pr.method && r.target == pr.target);
      requests_.push_back(pr);
    }
    Fault f = rule_(pr);
    if (f.kind == Fault::kChallengeBasic) {
      std::string lower = pr.head;
      for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (lower.find("\r\nauthorization:") == std::string::npos) {
        WriteAll(client,
                 "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"test\"\r\n"
                 "Content-Length: 0\r\nConnection: close\r\n\r\n");
        return;
      }
      f.kind = Fault::kPass;
    }
    if (f.kind == Fault::kChallengeBearer) {
      if (pr.head.find("\r\nAuthorization: Bearer " + f.body + "\r\n") == std::string::npos &&
          !pr.head.ends_with("\r\nAuthorization: Bearer " + f.body)) {
        WriteAll(client, "HTTP/1.1 401 Unauthorized\r\nWWW-Authenticate: Bearer realm=\"" +
                             f.location +
                             "\",service=\"digestd-test\"\r\nContent-Length: 0\r\n"
                             "Connection: close\r\n\r\n");
        return;
      }
      f.kind = Fault::kPass;
    }
    if (f.kind == Fault::kServe) {
      WriteAll(client, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: " +
                           std::to_string(f.body.size()) + "\r\nConnection: close\r\n\r\n" +
                           f.body);
      return;
    }
    if (f.kind == Fault::kStatus) {
      WriteAll(client, "HTTP/1.1 " + std::to_string(f.status) +
                           " Fault\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    if (f.kind == Fault::kRedirect) {
      WriteAll(client, "HTTP/1.1 307 Temporary Redirect\r\nLocation: " + f.location +
                           "\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
      return;
    }
    // Forward with Connection: close so the upstream body ends at EOF.
    std::string fwd;
    std::size_t pos = pr.head.find("\r\n") + 2;
    fwd = pr.head.substr(0, pos);
    while (pos < pr.head.size()) {
      auto eol = pr.head.find("\r\n", pos);
      if (eol == std::string::npos) eol = pr.head.size();
      std::string line = pr.head.substr(pos, eol - pos);
      std::string lower = line;
      for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      if (!lower.starts_with("connection:") && !lower.starts_with("host:")) fwd += line + "\r\n";
      pos = eol + 2;
    }
    fwd += "Host: 127.0.0.1:" + std::to_string(upstream_) + "\r\nConnection: close\r\n\r\n";
    const int up = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a.sin_port = htons(static_cast<uint16_t>(upstream_));
    if (::connect(up, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0) {
      ::close(up);
      return;
    }
    WriteAll(up, fwd);
    std::string resp;
    char tmp[65536];
    ssize_t n;
    while ((n = ::read(up, tmp, sizeof tmp)) > 0) resp.append(tmp, static_cast<std::size_t>(n));
    ::close(up);
    const auto rh_end = resp.find("\r\n\r\n");
    if (rh_end == std::string::npos) return;
    std::string head = resp.substr(0, rh_end);
    std::string body = resp.substr(rh_end + 4);
    // Drop framing headers (we re-frame below) and any header the fault replaces.
    std::string replaced = f.kind == Fault::kSetHeader ? f.header_name + ":" : std::string("\x01");
    for (auto& ch : replaced) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
    std::string out_head;
    std::size_t p = 0;
    while (p < head.size()) {
      auto eol = head.find("\r\n", p);
      if (eol == std::string::npos) eol = head.size();
      std::string line = head.substr(p, eol - p);
      std::string lower = line;
      for (auto& ch : lower) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
      const bool drop = lower.starts_with("content-length:") || lower.starts_with("connection:") ||
                        lower.starts_with("transfer-encoding:") || lower.starts_with(replaced);
      if (!drop) out_head += line + "\r\n";
      p = eol + 2;
    }
    if (f.kind == Fault::kReplaceBody) body = f.body;

    if (f.kind == Fault::kFlipByte && !body.empty()) body[body.size() / 2] ^= 0x01;
    if (f.kind == Fault::kSetHeader) out_head += f.header_name + ": " + f.header_value + "\r\n";
    const std::size_t declared = body.size() + (f.kind == Fault::kWrongLength ? 10 : 0);
    out_head += "Content-Length: " + std::to_string(declared) + "\r\nConnection: close\r\n\r\n";
    if (pr.method == "HEAD") body.clear();
    WriteAll(client, out_head);
    if (f.kind == Fault::kTruncate) {
      WriteAll(client, std::string_view(body).substr(0, body.size() / 2));
      ::shutdown(client, SHUT_RDWR);
      return;
    }
    if (f.kind == Fault::kSlowDrip) {
      for (char ch : body) {
        if (stop_) return;
        WriteAll(client, std::string_view(&ch, 1));
        std::this_thread::sleep_for(std::chrono::milliseconds(f.drip_ms));
        pollfd pfd{client, POLLRDHUP, 0};
        if (::poll(&pfd, 1, 0) > 0) return;  // the client gave up
      }
      return;
    }
    WriteAll(client, body);
  }

  int upstream_;
  Rule rule_;
  int listen_fd_ = -1;
  int port_ = 0;
  std::atomic<bool> stop_{false};
  std::thread acceptor_;
  mutable std::mutex mu_;
  std::vector<std::thread> workers_;
  std::vector<ProxyRequest> requests_;
};

}  // namespace digestd::testing
