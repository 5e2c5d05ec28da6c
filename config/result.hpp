// Result<T>: a value or an error message that names what was wrong (a config key path or a
// kernel object), for the control path. The fast path never uses it.
#pragma once

#include <string>
#include <utility>
#include <variant>

namespace ztg {

struct Error {
    std::string message;
};

template <class T>
class [[nodiscard]] Result {
  public:
    Result(T v) : v_(std::move(v)) {}
    Result(Error e) : v_(std::move(e)) {}
    bool ok() const { return v_.index() == 0; }
    explicit operator bool() const { return ok(); }
    T& value() { return std::get<0>(v_); }
    const T& value() const { return std::get<0>(v_); }
    T* operator->() { return &value(); }
    T& operator*() { return value(); }
    const std::string& error() const { return std::get<1>(v_).message; }

  private:
    std::variant<T, Error> v_;
};

struct Ok {};
using Status = Result<Ok>;

inline Error err(std::string msg) {
    return Error{std::move(msg)};
}

} // namespace ztg
