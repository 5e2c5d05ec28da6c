// Questions other threads (telemetry, the metrics server) ask the control thread about state
// only it may read: the pod table's locations, the kernel mirror, the ports' links. The
// asker queues a function and waits, bounded; the control loop runs what is queued once per
// round (about every millisecond). A control thread that does not answer in time is itself
// news: the asker gets nothing and says so.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <optional>

namespace ztg {

class ControlInbox {
  public:
    // Any thread but the control thread: runs f on the control thread and returns its
    // result, or nothing if the control thread did not get to it within `timeout` (or the
    // inbox is closed).
    template <class F>
    auto ask(F f, std::chrono::milliseconds timeout = std::chrono::milliseconds(1000))
        -> std::optional<decltype(f())> {
        using R = decltype(f());
        struct Reply {
            std::optional<R> value;
            bool done = false;
        };
        auto reply = std::make_shared<Reply>(); // outlives a caller that gave up
        std::unique_lock lk(mu_);
        if (closed_) return std::nullopt;
        queue_.push_back([this, reply, f = std::move(f)]() mutable {
            R v = f();
            std::lock_guard g(mu_);
            reply->value = std::move(v);
            reply->done = true;
            cv_.notify_all();
        });
        cv_.wait_for(lk, timeout, [&] { return reply->done || closed_; });
        return reply->done ? std::move(reply->value) : std::nullopt;
    }

    // The control thread, once per loop round (counted: the health check watches it).
    void serve() {
        rounds_.store(rounds_.load(std::memory_order_relaxed) + 1, std::memory_order_relaxed);
        std::deque<std::function<void()>> work;
        {
            std::lock_guard g(mu_);
            work.swap(queue_);
        }
        for (auto& w : work) w();
    }

    // At shutdown, before the state the questions read goes away: pending and later
    // questions get nothing.
    void close() {
        std::lock_guard g(mu_);
        closed_ = true;
        queue_.clear();
        cv_.notify_all();
    }

    uint64_t rounds() const { return rounds_.load(std::memory_order_relaxed); }

  private:
    std::atomic<uint64_t> rounds_{0};
    std::mutex mu_;
    std::condition_variable cv_;
    std::deque<std::function<void()>> queue_;
    bool closed_ = false;
};

} // namespace ztg
