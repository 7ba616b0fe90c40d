// The one include of Boost.Asio for featurekv. Boost 1.74's awaitable.hpp
// uses std::exchange without including <utility>; include it first.
#pragma once

#include <utility>

#include <boost/asio.hpp>

namespace fkv {
namespace asio = boost::asio;
}  // namespace fkv
