// PeerClients: see peer_client.h.
#include "server/peer_client.h"

#include <charconv>
#include <chrono>
#include <cstdint>

namespace fkv {

namespace {
// The line after the type byte at `p` ("\r\n"-terminated): its end, or npos.
size_t LineEnd(std::string_view buf, size_t p) {
  size_t e = buf.find("\r\n", p);
  return e;
}
bool ParseInt(std::string_view s, int64_t* v) {
  auto r = std::from_chars(s.data(), s.data() + s.size(), *v);
  return r.ec == std::errc() && r.ptr == s.data() + s.size();
}
}  // namespace

size_t RespScanner::Scan(std::string_view buf) {
  constexpr size_t kBad = SIZE_MAX;
  while (true) {
    // One element at pos_: a whole leaf, or an aggregate's header.
    if (pos_ >= buf.size()) return 0;
    const char t = buf[pos_];
    const size_t e = LineEnd(buf, pos_ + 1);
    if (e == std::string_view::npos) return 0;
    const std::string_view line = buf.substr(pos_ + 1, e - pos_ - 1);
    size_t next = e + 2;
    int64_t open = 0;  // elements of an aggregate that starts here
    switch (t) {
      case '+': case '-': case ':': case '_': case ',': case '#': case '(':
        break;
      case '$': case '=': case '!': {
        int64_t n;
        if (!ParseInt(line, &n) || n < -1 || n > (int64_t{1} << 40)) return kBad;
        if (n < 0) break;
        const size_t end = next + static_cast<size_t>(n) + 2;
        if (end > buf.size()) return 0;  // (the header is read again next time: one line)
        if (buf[end - 2] != '\r' || buf[end - 1] != '\n') return kBad;
        next = end;
        break;
      }
      case '*': case '~': case '>': case '%': case '|': {
        int64_t n;
        if (!ParseInt(line, &n) || n < -1 || n > (int64_t{1} << 40)) return kBad;
        if (n < 0) break;
        open = t == '%' ? 2 * n : t == '|' ? 2 * n + 1 : n;  // an attribute precedes the value it describes
        break;
      }
      default:
        return kBad;
    }
    pos_ = next;
    if (open > 0) {
      if (left_.size() >= 64) return kBad;
      left_.push_back(open);
      continue;
    }
    // An element is complete: so is every aggregate it was the last of.
    while (!left_.empty() && --left_.back() == 0) left_.pop_back();
    if (left_.empty()) {
      const size_t len = pos_;
      pos_ = 0;
      return len;
    }
  }
}

size_t RespValueLength(std::string_view buf) {
  RespScanner s;
  return s.Scan(buf);
}

bool SplitRespArray(std::string_view reply, std::vector<std::string_view>* elems) {
  elems->clear();
  if (reply.empty() || reply[0] != '*') return false;
  const size_t e = reply.find("\r\n");
  int64_t n;
  if (e == std::string_view::npos || !ParseInt(reply.substr(1, e - 1), &n) || n < 0) return false;
  size_t q = e + 2;
  for (int64_t i = 0; i < n; i++) {
    const size_t len = RespValueLength(reply.substr(q));
    if (len == 0 || len == SIZE_MAX) return false;
    elems->push_back(reply.substr(q, len));
    q += len;
  }
  return q == reply.size();
}

std::string RespCommand(const std::vector<std::string_view>& args) {
  std::string out = "*" + std::to_string(args.size()) + "\r\n";
  for (std::string_view a : args) {
    out += "$" + std::to_string(a.size()) + "\r\n";
    out.append(a);
    out += "\r\n";
  }
  return out;
}

// One connection: requests written in order, replies matched in order.
struct PeerClients::Conn : std::enable_shared_from_this<Conn> {
  explicit Conn(asio::io_context& io) : socket(io), timer(io) {}
  asio::ip::tcp::socket socket;
  // A peer that does not answer (paused, unreachable, stuck) fails what
  // waits on it after kPeerTimeoutMs: the clients get TRYAGAIN, not a hang.
  asio::steady_timer timer;
  bool timer_armed = false;
  std::deque<std::chrono::steady_clock::time_point> sent_at;  // per entry of `waiting`
  bool open = false, connecting = false, writing = false, failed = false;
  std::string out;       // waiting to be written
  std::string writing_buf;
  std::string in;        // read, not yet a whole reply
  RespScanner scanner;   // how far into it the reply is known well formed
  char chunk[16384];
  std::deque<Done> waiting;  // one per request written or queued, in order
  int internal = 0;          // leading replies of AUTH / HELLO: not handed to anyone

  void Fail(const std::string& err) {
    failed = true;
    boost::system::error_code ec;
    socket.close(ec);
    timer.cancel();
    sent_at.clear();
    open = connecting = writing = false;
    auto w = std::move(waiting);
    waiting.clear();
    out.clear();
    in.clear();
    internal = 0;
    for (auto& d : w)
      if (d) d("", err);
  }
  void Write() {
    if (writing || !open || out.empty()) return;
    writing = true;
    writing_buf.swap(out);
    out.clear();
    asio::async_write(socket, asio::buffer(writing_buf), [self = shared_from_this()](boost::system::error_code ec, size_t) {
      self->writing = false;
      if (ec) return self->Fail("peer write: " + ec.message());
      self->Write();
    });
  }
  void Read() {
    socket.async_read_some(asio::buffer(chunk), [self = shared_from_this()](boost::system::error_code ec, size_t n) {
      if (ec) return self->Fail("peer connection: " + ec.message());
      self->in.append(self->chunk, n);
      size_t used = 0;
      while (true) {
        const size_t len = self->scanner.Scan(std::string_view(self->in).substr(used));
        if (len == 0) break;
        if (len == SIZE_MAX) return self->Fail("peer sent something that is not RESP");
        std::string_view reply = std::string_view(self->in).substr(used, len);
        used += len;
        if (self->waiting.empty()) return self->Fail("peer sent a reply nobody asked for");
        Done d = std::move(self->waiting.front());
        self->waiting.pop_front();
        self->sent_at.pop_front();
        if (!d) {  // AUTH, HELLO or CLIENT SETNAME
          if (reply[0] == '-' || reply[0] == '!') return self->Fail("peer refused the connection: " + std::string(reply.substr(1, reply.size() - 3)));
          continue;
        }
        d(reply, "");
      }
      self->in.erase(0, used);
      self->Read();
    });
  }
  void Expect(Done d) {
    waiting.push_back(std::move(d));
    sent_at.push_back(std::chrono::steady_clock::now());
    Arm();
  }
  void Arm() {
    if (timer_armed || sent_at.empty()) return;
    timer_armed = true;
    timer.expires_at(sent_at.front() + std::chrono::milliseconds(kPeerTimeoutMs));
    timer.async_wait([self = shared_from_this()](boost::system::error_code ec) {
      self->timer_armed = false;
      if (ec || self->failed) return;
      if (!self->sent_at.empty() &&
          std::chrono::steady_clock::now() - self->sent_at.front() >= std::chrono::milliseconds(kPeerTimeoutMs))
        return self->Fail("the peer did not answer within " + std::to_string(kPeerTimeoutMs) + " ms");
      self->Arm();  // the oldest one waiting now is younger
    });
  }
};

PeerClients::~PeerClients() {
  for (auto& [k, c] : conns_) {
    boost::system::error_code ec;
    c->socket.close(ec);
  }
}

void PeerClients::Call(const std::string& ip, int port, int proto, std::string request, Done done) {
  auto& slot = conns_[{ip, port, proto}];
  if (!slot || slot->failed) slot = std::make_shared<Conn>(io_);
  std::shared_ptr<Conn> c = slot;
  if (!c->open && !c->connecting) {
    c->connecting = true;
    // The handshake goes first: its replies are nobody's.
    if (!password_.empty()) {
      c->out += RespCommand({"AUTH", password_});
      c->Expect(nullptr);
    }
    if (proto == 3) {
      c->out += RespCommand({"HELLO", "3"});
      c->Expect(nullptr);
    }
    c->out += RespCommand({"CLIENT", "SETNAME", kPeerClientName});
    c->Expect(nullptr);
    boost::system::error_code ec;
    auto addr = asio::ip::make_address(ip, ec);
    if (ec) {
      c->Expect(std::move(done));
      asio::post(io_, [c] { c->Fail("bad peer address"); });
      return;
    }
    c->socket.async_connect(asio::ip::tcp::endpoint(addr, static_cast<unsigned short>(port)),
                            [c](boost::system::error_code e) {
                              c->connecting = false;
                              if (e) return c->Fail("cannot reach the peer: " + e.message());
                              c->open = true;
                              boost::system::error_code ignored;
                              c->socket.set_option(asio::ip::tcp::no_delay(true), ignored);
                              c->Read();
                              c->Write();
                            });
  }
  c->out += request;
  c->Expect(std::move(done));
  c->Write();
}

}  // namespace fkv
