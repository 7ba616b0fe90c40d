// Cluster mode: requests from one node to another (docs/architecture.md,
// "Cluster mode", FMGET's fan-out). One PeerClients per shard thread, on
// that thread's io_context: a connection per (node address, protocol),
// opened on first use, pipelined (replies come back in request order), and
// reopened after an error. Replies are handed over as raw RESP bytes.
#pragma once

#include <cstddef>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <string>
#include <string_view>
#include <tuple>
#include <vector>

#include "server/asio.h"

namespace fkv {

// The length of the first complete RESP2/RESP3 value in `buf`: 0 when it
// is not complete yet, SIZE_MAX when it is not RESP.
size_t RespValueLength(std::string_view buf);
// The same over a buffer that grows between calls (a reply arriving in
// reads): each call scans only the elements it has not seen whole, so a
// large reply costs one pass, not one per read. After a complete value
// (its length returned) it starts over at the next value.
class RespScanner {
 public:
  size_t Scan(std::string_view buf);  // 0 incomplete, SIZE_MAX not RESP, else the length

 private:
  size_t pos_ = 0;             // where the next element to read starts
  std::vector<int64_t> left_;  // per open aggregate: its elements not yet whole
};
// The elements of a complete RESP array reply, as raw bytes each; false
// when `reply` is not an array (e.g. an error).
bool SplitRespArray(std::string_view reply, std::vector<std::string_view>* elems);
// A command as a RESP array of bulk strings.
std::string RespCommand(const std::vector<std::string_view>& args);

// The name peer connections give themselves: a node answers their FMGET
// from its own slots only (no second hop).
inline constexpr const char* kPeerClientName = "featurekv-peer";
// How long a request to a peer may wait for its reply.
inline constexpr int kPeerTimeoutMs = 5000;

class PeerClients {
 public:
  // `password`: sent with AUTH first when not empty (requirepass).
  PeerClients(asio::io_context& io, std::string password) : io_(io), password_(std::move(password)) {}
  ~PeerClients();
  // Sends `request` (RESP bytes) to ip:port speaking RESP `proto` (2 or 3);
  // done(reply, "") with the reply's bytes, or done("", error). done runs on
  // this io_context's thread, never inside Call.
  using Done = std::function<void(std::string_view reply, const std::string& error)>;
  void Call(const std::string& ip, int port, int proto, std::string request, Done done);

 private:
  struct Conn;
  asio::io_context& io_;
  std::string password_;
  std::map<std::tuple<std::string, int, int>, std::shared_ptr<Conn>> conns_;
};

}  // namespace fkv
