// A small HTTP/1.1 server (Boost.Beast over Asio) on a thread of its own, never a worker:
// GET only, one handler for every path, keep-alive as the client asks. It also runs a
// periodic tick on the same thread (the health check's sampling).
#pragma once

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <thread>

#include "config/result.hpp"

namespace ztg {

struct HttpReply {
    unsigned status = 200;
    std::string content_type = "text/plain; charset=utf-8";
    std::string body;
};
// target: the request's path with its query, e.g. "/metrics".
using HttpHandler = std::function<HttpReply(const std::string& target)>;

class HttpServer {
  public:
    HttpServer();
    ~HttpServer();
    HttpServer(const HttpServer&) = delete;
    HttpServer& operator=(const HttpServer&) = delete;

    // Binds address:port (an IP literal) and starts the thread. tick runs every `period`.
    Status start(const std::string& address, uint16_t port, HttpHandler handler,
                 std::function<void()> tick, std::chrono::milliseconds period);
    void stop();
    uint16_t port() const; // the bound port (0 before start)

  private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
    std::thread thread_;
};

} // namespace ztg
