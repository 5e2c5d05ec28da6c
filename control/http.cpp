#include "control/http.hpp"

#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>

#include <pthread.h>

namespace ztg {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;

namespace {

// One connection: read a request, answer it, again while the client keeps it alive.
class Session : public std::enable_shared_from_this<Session> {
  public:
    Session(tcp::socket s, const HttpHandler& h) : stream_(std::move(s)), handler_(h) {}
    void run() { read(); }

  private:
    void read() {
        req_ = {};
        stream_.expires_after(std::chrono::seconds(30)); // an idle client is let go
        bhttp::async_read(stream_, buf_, req_,
                          [self = shared_from_this()](beast::error_code ec, size_t) {
                              if (!ec) self->answer();
                          });
    }
    void answer() {
        HttpReply r;
        if (req_.method() != bhttp::verb::get && req_.method() != bhttp::verb::head)
            r = {405, "text/plain; charset=utf-8", "only GET\n"};
        else
            r = handler_(std::string(req_.target()));
        auto res = std::make_shared<bhttp::response<bhttp::string_body>>(bhttp::status(r.status),
                                                                         req_.version());
        res->set(bhttp::field::server, "ztgeneve");
        res->set(bhttp::field::content_type, r.content_type);
        res->keep_alive(req_.keep_alive());
        if (req_.method() != bhttp::verb::head) res->body() = std::move(r.body);
        res->prepare_payload();
        bhttp::async_write(stream_, *res,
                           [self = shared_from_this(), res](beast::error_code ec, size_t) {
                               if (ec) return;
                               if (res->keep_alive())
                                   self->read();
                               else
                                   self->stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
                           });
    }

    beast::tcp_stream stream_;
    beast::flat_buffer buf_;
    bhttp::request<bhttp::string_body> req_;
    const HttpHandler& handler_;
};

} // namespace

struct HttpServer::Impl {
    asio::io_context io{1};
    tcp::acceptor acceptor{io};
    asio::steady_timer timer{io};
    HttpHandler handler;
    std::function<void()> tick;
    std::chrono::milliseconds period{100};

    void accept() {
        acceptor.async_accept([this](beast::error_code ec, tcp::socket s) {
            if (!acceptor.is_open()) return;
            if (!ec) std::make_shared<Session>(std::move(s), handler)->run();
            accept();
        });
    }
    void schedule() {
        timer.expires_after(period);
        timer.async_wait([this](beast::error_code ec) {
            if (ec) return;
            tick();
            schedule();
        });
    }
};

HttpServer::HttpServer() : impl_(std::make_unique<Impl>()) {}

HttpServer::~HttpServer() {
    stop();
}

Status HttpServer::start(const std::string& address, uint16_t port, HttpHandler handler,
                         std::function<void()> tick, std::chrono::milliseconds period) {
    beast::error_code ec;
    const auto addr = asio::ip::make_address(address, ec);
    if (ec) return err("'" + address + "' is not an IP address");
    const tcp::endpoint ep(addr, port);
    auto& a = impl_->acceptor;
    if (a.open(ep.protocol(), ec); !ec) a.set_option(asio::socket_base::reuse_address(true), ec);
    if (!ec) a.bind(ep, ec);
    if (!ec) a.listen(asio::socket_base::max_listen_connections, ec);
    if (ec)
        return err("cannot listen on " + address + ":" + std::to_string(port) + ": " +
                   ec.message());
    impl_->handler = std::move(handler);
    impl_->tick = std::move(tick);
    impl_->period = period;
    impl_->accept();
    if (impl_->tick) impl_->schedule();
    thread_ = std::thread([this] {
        pthread_setname_np(pthread_self(), "ztg-http");
        impl_->io.run();
    });
    return Ok{};
}

void HttpServer::stop() {
    if (!thread_.joinable()) return;
    asio::post(impl_->io, [this] {
        beast::error_code ec;
        impl_->acceptor.close(ec);
        impl_->timer.cancel();
        impl_->io.stop();
    });
    thread_.join();
}

uint16_t HttpServer::port() const {
    beast::error_code ec;
    const auto ep = impl_->acceptor.local_endpoint(ec);
    return ec ? 0 : ep.port();
}

} // namespace ztg
