// Connection: see connection.h. The flow of one read:
//   DoRead (home) -> Process(home) -> [hop to key's shard -> Execute ...]
//   -> FlushAndRead (home) -> [after the loop pass] Flush: one write of every reply, then the next read.
#include "server/connection.h"

#include <utility>

#include <spdlog/spdlog.h>

#include "server/server.h"
#include "storage/key_table.h"

namespace fkv {

namespace {
constexpr size_t kReadChunk = 16 * 1024;
constexpr size_t kFlushThreshold = 1 << 20;  // flush mid-pipeline past 1 MiB of replies
constexpr size_t kMaxLogged = 1024;  // logged writes of one connection waiting for their replies

std::string Endpoint(const asio::ip::tcp::endpoint& ep) {
  return ep.address().to_string() + ":" + std::to_string(ep.port());
}
}  // namespace

Connection::Connection(Server* server, int home, asio::ip::tcp::socket socket, uint64_t id,
                       std::shared_ptr<asio::ssl::context> tls)
    : server_(server), home_(home), socket_(std::move(socket)), id_(id), fd_(static_cast<int>(socket_.native_handle())),
      tls_ctx_(std::move(tls)), writer_(&wbuf_, 2) {
  if (tls_ctx_) tls_ = std::make_unique<asio::ssl::stream<asio::ip::tcp::socket&>>(socket_, *tls_ctx_);
  boost::system::error_code ec;
  auto rp = socket_.remote_endpoint(ec);
  if (!ec) peer_ = Endpoint(rp);
  auto lp = socket_.local_endpoint(ec);
  if (!ec) local_ = Endpoint(lp);
  socket_.set_option(asio::ip::tcp::no_delay(true), ec);
  socket_.non_blocking(true, ec);  // Flush writes directly first
  created_ms_ = NowMs();
  last_interaction_ms_ = created_ms_;
  user_ = server_->acl().Find("default");
  acl_epoch_ = server_->acl().epoch();
  if (server_->acl().default_open()) LogIn(user_);
}

void Connection::LogIn(std::shared_ptr<const AclUser> u) {
  user_ = std::move(u);
  authenticated_ = true;
  std::lock_guard lk(name_mu_);
  user_name_ = user_->name;
}

void Connection::LogOut() {
  if (auto d = server_->acl().Find("default")) user_ = std::move(d);
  authenticated_ = false;
  std::lock_guard lk(name_mu_);
  user_name_.clear();
}

std::string Connection::user_name() const {
  std::lock_guard lk(name_mu_);
  return user_name_;
}

void Connection::LogDenied(std::string_view reason, std::string_view object) {
  int64_t now = NowMs();
  server_->acl().Log(reason, object, user_->name, Describe(now), now);
  Audit("denied", {{"reason", std::string(reason)}, {"object", std::string(object)}});
}

void Connection::Audit(std::string_view event, std::vector<std::pair<std::string, std::string>> details,
                       std::string_view user) {
  AuditLog& log = server_->audit();
  if (!log.on()) return;
  details.insert(details.begin(), {"client_id", std::to_string(id_)});
  log.Record(event, peer_, user.empty() ? std::string_view(user_->name) : user, details);
}

// Redis's order: authentication, then the command's bit, then its keys.
std::string Connection::CheckAcl(const CommandSpec* spec) {
  Acl& acl = server_->acl();
  if (acl_epoch_ != acl.epoch()) {  // users changed: look ours up again
    acl_epoch_ = acl.epoch();
    auto u = acl.Find(user_->name);
    if (authenticated_ && (u == nullptr || !u->on)) {
      // Deleted or disabled: the connection ends (as Redis closes it).
      close_after_write_ = true;
      return "\n";
    }
    if (u != nullptr) user_ = std::move(u);
  }
  if (!authenticated_ && !(spec->flags & kCmdNoAuth)) {
    if (!acl.default_open()) return "NOAUTH Authentication required.";
    LogIn(acl.Find("default"));  // the default user lost its password at run time
  }
  if (!authenticated_ || (spec->flags & kCmdNoAuth)) return "";
  std::string_view object;
  switch (CheckCall(*user_, *spec, args_, &object)) {
    case AclRefusal::kNone: return "";
    case AclRefusal::kCommand:
      LogDenied("command", object);
      return "NOPERM this user has no permissions to run the '" + std::string(object) + "' command";
    case AclRefusal::kKey:
      LogDenied("key", object);
      return std::string(kAclKeyDenied);
  }
  return "";
}

std::string Connection::name() const {
  std::lock_guard lk(name_mu_);
  return name_;
}

void Connection::set_name(std::string n) {
  std::lock_guard lk(name_mu_);
  name_ = std::move(n);
}

void Connection::set_lib(bool version, std::string v) {
  std::lock_guard lk(name_mu_);
  (version ? lib_ver_ : lib_name_) = std::move(v);
}

std::string Connection::Describe(int64_t now_ms) const {
  const CommandSpec* last = last_cmd_.load(std::memory_order_relaxed);
  std::string lib, user;
  {
    std::lock_guard lk(name_mu_);
    lib = " lib-name=" + lib_name_ + " lib-ver=" + lib_ver_;
    user = user_name_.empty() ? "default" : user_name_;
  }
  std::string s = "id=" + std::to_string(id_) + " addr=" + peer_ + " laddr=" + local_ + " fd=" +
                  std::to_string(fd_) + " name=" + name() +
                  " age=" + std::to_string((now_ms - created_ms_) / 1000) +
                  " idle=" + std::to_string(idle_ms(now_ms) / 1000) + " flags=N db=0 sub=0 psub=0 ssub=0 multi=-1" +
                  " qbuf=" + std::to_string(qbuf_.load(std::memory_order_relaxed)) +
                  " qbuf-free=" + std::to_string(qbuf_free_.load(std::memory_order_relaxed)) +
                  " argv-mem=0 multi-mem=0 rbs=" + std::to_string(rbs_.load(std::memory_order_relaxed)) +
                  " rbp=" + std::to_string(rbp_.load(std::memory_order_relaxed)) + " obl=0 oll=0 omem=0 tot-mem=" +
                  std::to_string(rbs_.load(std::memory_order_relaxed) + wbuf_cap_.load(std::memory_order_relaxed) +
                                 sizeof(*this)) +
                  " events=r cmd=" + (last ? last->name : "NULL") + " user=" + user + " redir=-1 resp=" +
                  std::to_string(resp_.load(std::memory_order_relaxed)) + lib + " shard=" + std::to_string(home_);
  return s;
}

void Connection::Start() {
  server_->shards().shard(home_).clients.insert(this);
  if (!tls_) return DoRead();
  // TLS: the handshake first, within kHandshakeTimeout, so a client that
  // stalls or sends garbage holds only its own socket (docs/operations.md, "TLS").
  constexpr auto kHandshakeTimeout = std::chrono::seconds(10);
  handshake_timer_ = std::make_unique<asio::steady_timer>(socket_.get_executor(), kHandshakeTimeout);
  handshake_timer_->async_wait([self = shared_from_this()](const boost::system::error_code& ec) {
    if (ec) return;  // cancelled: the handshake ended first
    spdlog::info("closing client id={} addr={}: no TLS handshake within 10 s", self->id_, self->peer_);
    boost::system::error_code cec;
    self->socket_.close(cec);  // the handshake's completion (aborted) closes the connection
  });
  tls_->async_handshake(asio::ssl::stream_base::server, [self = shared_from_this()](const boost::system::error_code& ec) {
    self->handshake_timer_->cancel();
    if (ec) {
      spdlog::info("TLS handshake with client id={} addr={} failed: {}", self->id_, self->peer_, ec.message());
      return self->Close();
    }
    self->DoRead();
  });
}

bool Connection::Kill() {
  if (kill_requested_.exchange(true)) return false;
  auto self = shared_from_this();
  server_->shards().Post(home_, [self] {
    self->killed_ = true;
    boost::system::error_code ec;
    self->socket_.shutdown(asio::ip::tcp::socket::shutdown_both, ec);
    self->socket_.close(ec);
  });
  return true;
}

void Connection::Close() {
  if (closed_) return;
  closed_ = true;
  boost::system::error_code ec;
  socket_.close(ec);
  server_->shards().shard(home_).clients.erase(this);
  server_->connected_clients.fetch_sub(1, std::memory_order_relaxed);
}

void Connection::DoRead() {
  if (closed_) return;
  if (killed_) return Close();
  read_gen_++;
  // Keep the unconsumed bytes at the front; the parser holds only offsets.
  if (rpos_ > 0) {
    if (rend_ > rpos_) std::memmove(rbuf_.get(), rbuf_.get() + rpos_, rend_ - rpos_);
    rend_ -= rpos_;
    rpos_ = 0;
  }
  const Config& cfg = server_->config();
  if (rend_ > cfg.client_query_buffer_limit()) {
    spdlog::warn("closing client id={} addr={}: query buffer {} bytes over client-query-buffer-limit", id_, peer_, rend_);
    return Close();
  }
  ParserLimits lim = parser_.limits();
  lim.max_bulk_len = cfg.proto_max_bulk_len();
  parser_.set_limits(lim);
  size_t want = rend_ + kReadChunk;
  if (parser_.bytes_wanted() > rend_) want = std::max(want, parser_.bytes_wanted());
  if (want > rcap_) {
    size_t cap = std::max(rcap_ * 2, want);
    auto nb = std::make_unique<char[]>(cap);
    if (rend_ > 0) std::memcpy(nb.get(), rbuf_.get(), rend_);
    rbuf_ = std::move(nb);
    rcap_ = cap;
  } else if (rend_ == 0 && rcap_ > 4 * kReadChunk) {
    // Idle after a big request: give the memory back.
    rbuf_ = std::make_unique<char[]>(kReadChunk);
    rcap_ = kReadChunk;
  }
  PublishBuffers();
  auto on_read = [self = shared_from_this()](const boost::system::error_code& ec, size_t n) {
                            if (ec) return self->Close();
                            self->rend_ += n;
                            // As Redis: check the query buffer after every read, before running anything.
                            if (self->rend_ - self->rpos_ > self->server_->config().client_query_buffer_limit()) {
                              spdlog::warn("closing client id={} addr={}: query buffer {} bytes over client-query-buffer-limit",
                                           self->id_, self->peer_, self->rend_ - self->rpos_);
                              return self->Close();
                            }
                            self->server_->shards().shard(self->home_).counters.Add(
                                self->server_->shards().shard(self->home_).counters.net_input, n);
                            self->last_interaction_ms_.store(NowMs(), std::memory_order_relaxed);
                            self->PublishBuffers();
                            self->Process(self->home_);
  };
  asio::mutable_buffer buf(rbuf_.get() + rend_, rcap_ - rend_);
  if (tls_) tls_->async_read_some(buf, std::move(on_read));
  else socket_.async_read_some(buf, std::move(on_read));
}

void Connection::Process(int shard) {
  more_input_ = false;
  clock_chained_ = false;  // what ran before waited for I/O or another thread
  for (;;) {
    if (killed_.load(std::memory_order_relaxed)) break;
    if (!have_cmd_) {
      if (close_after_write_) break;
      if (wbuf_.size() > kFlushThreshold) {
        more_input_ = true;
        break;
      }
      ParseStatus st = parser_.Parse(std::string_view(rbuf_.get() + rpos_, rend_ - rpos_), &args_, &consumed_);
      if (st == ParseStatus::kNeedMore) break;
      if (st == ParseStatus::kError) {
        const size_t out_before = wbuf_.size();
        writer_.Error(parser_.error());
        KeepAfterLogged(out_before);
        spdlog::info("protocol error from client id={} addr={}: {}", id_, peer_, parser_.error());
        close_after_write_ = true;
        break;
      }
      if (args_.empty()) {  // empty multibulk or blank inline line
        rpos_ += consumed_;
        continue;
      }
      have_cmd_ = true;
      spec_ = CommandTable::Get().Find(args_[0]);
      target_ = shard;
      const bool queue = tx_.active && spec_ != nullptr && !(spec_->flags & kCmdTxControl);
      // EXEC of a transaction on one shard: the baton goes there and it runs inline.
      if (tx_.active && !tx_.dirty && tx_.shard >= 0 && spec_ != nullptr && std::string_view(spec_->name) == "exec")
        target_ = tx_.shard;
      if (spec_ != nullptr && !queue && spec_->first_key > 0 && !(spec_->flags & kCmdMultiShard) &&
          static_cast<int>(args_.size()) > spec_->first_key) {
        key_hash_ = HashKey(args_[static_cast<size_t>(spec_->first_key)]);
        target_ = server_->shards().ShardOf(key_hash_);
      }
    }
    if (target_ != shard) {
      // Hop: the rest of this loop continues on the key's shard.
      int t = target_;
      server_->shards().Post(t, [self = shared_from_this(), t] { self->Process(t); });
      return;
    }
    // Behind logged writes still waiting for their replies, only more of
    // them run (at most kMaxLogged); anything else waits for them first.
    const size_t pending = logged_pending_;
    if (pending > 0 && (pending >= kMaxLogged || tx_.active || !IsClusterWrite(spec_, shard)) && !DrainLogged(shard)) return;
    const size_t out_before = wbuf_.size();
    Execute(shard);
    if (pending > 0) KeepAfterLogged(out_before);  // a write refused before it was sent
    rpos_ += consumed_;
    have_cmd_ = false;
    if (suspended_) return;  // a fan-out resumes us
  }
  if (logged_pending_ > 0 && !killed_.load(std::memory_order_relaxed) && !DrainLogged(shard)) return;
  if (shard != home_) {
    server_->shards().Post(home_, [self = shared_from_this()] { self->FlushAndRead(); });
  } else {
    FlushAndRead();
  }
}

const char* Connection::PeekCommand(const char* at, ArgList* args) {
  std::string_view rest = Unparsed();
  if (at < rest.data() || at >= rest.data() + rest.size() || *at != '*') return nullptr;
  peek_parser_.Reset();
  peek_parser_.set_limits(parser_.limits());
  size_t used = 0;
  std::string_view buf(at, static_cast<size_t>(rest.data() + rest.size() - at));
  if (peek_parser_.Parse(buf, args, &used) != ParseStatus::kComplete) return nullptr;
  return at + used;
}

// Cluster mode (docs/architecture.md, "Cluster mode"): a keyed write is sent
// to the repartition partition of its slot (this node's: the client was
// routed here) and run by this node's owner ingest in log order, so it
// moves with the slot and outlives the node; the reply is what it answered
// there, in the write's slot of logged_.
bool Connection::IsClusterWrite(const CommandSpec* spec, int shard) const {
  return spec != nullptr && (spec->flags & kCmdWrite) && spec->first_key > 0 &&
         server_->shards().shard(shard).cluster != nullptr;
}

void Connection::SendLogged(CommandContext& c) {
  ClusterLog* log = server_->cluster_log();
  if (log == nullptr) return c.out.Error("TRYAGAIN cluster mode is starting");
  const int nparts = server_->shards().shard(c.shard).cluster->partitions();
  const int p = PartitionOfKey(c.args[static_cast<size_t>(c.spec->first_key)], nparts);
  auto slot = std::make_shared<LoggedReplies::Slot>();
  {
    std::lock_guard lk(logged_->mu);
    logged_->slots.push_back(slot);
  }
  logged_pending_++;
  log->SendCommand(p, c.args, c.now_ms, protocol() == 3, [lr = logged_, slot](std::string bytes, std::string err) {
    std::function<void()> wake;
    {
      std::lock_guard lk(lr->mu);
      slot->bytes = err.empty() ? std::move(bytes) : "-" + err + "\r\n";
      slot->ready = true;
      if (lr->wake && lr->slots.front()->ready) {
        wake = std::move(lr->wake);
        lr->wake = nullptr;
      }
    }
    if (wake) wake();
  });
}

void Connection::KeepAfterLogged(size_t out_before) {
  if (logged_pending_ == 0 || wbuf_.size() <= out_before) return;
  auto slot = std::make_shared<LoggedReplies::Slot>();
  slot->ready = true;
  slot->bytes = wbuf_.substr(out_before);
  wbuf_.resize(out_before);
  std::lock_guard lk(logged_->mu);
  logged_->slots.push_back(std::move(slot));
  logged_pending_++;
}

bool Connection::DrainLogged(int shard) {
  std::lock_guard lk(logged_->mu);
  auto& q = logged_->slots;
  while (!q.empty() && q.front()->ready) {
    wbuf_.append(q.front()->bytes);
    q.pop_front();
    logged_pending_--;
  }
  if (q.empty()) return true;
  logged_->wake = [self = shared_from_this(), shard] {
    self->server_->shards().Post(shard, [self, shard] { self->Process(shard); });
  };
  return false;
}

void Connection::Execute(int shard) {
  // In a pipeline a command's time starts where the previous one's ended
  // (one clock read per command; docs/operations.md, "Metrics"). A
  // refused or unknown command breaks the chain.
  const bool chained = clock_chained_;
  clock_chained_ = false;
  Shard& sh = server_->shards().shard(shard);
  sh.counters.Add(sh.counters.commands, 1);
  const CommandSpec* spec = spec_;
  if (spec == nullptr) {
    // As Redis: at most 128 bytes of arguments, each cut to what is left.
    // (appends, not "'" + std::string(...): g++ 12 at -O3 warns falsely on that)
    std::string list;
    for (size_t i = 1; i < args_.size() && list.size() < 128; i++) {
      std::string_view part = args_[i].substr(0, 128 - list.size());
      list.append("'").append(part).append("' ");
    }
    if (tx_.active) tx_.dirty = true;  // EXEC will abort
    std::string msg = "ERR unknown command '";
    msg.append(args_[0].substr(0, 128)).append("', with args beginning with: ").append(list);
    writer_.Error(msg);
    return;
  }
  last_cmd_.store(spec, std::memory_order_relaxed);
  const size_t index = spec->index;
  // Refused before running: Redis's rejected_calls.
  auto reject = [&](std::string_view error) {
    sh.command_stats->Reject(index);
    if (tx_.active && std::string_view(spec->name) == "exec") {
      // As Redis: a refused EXEC ends the transaction, saying why.
      tx_.Clear();
      std::string_view why = error.substr(error.rfind("ERR ", 0) == 0 ? 4 : 0);
      return writer_.Error("EXECABORT Transaction discarded because of: " + std::string(why));
    }
    if (tx_.active) tx_.dirty = true;  // EXEC will abort
    writer_.Error(error);
  };
  int argc = static_cast<int>(args_.size());
  if ((spec->arity > 0 && argc != spec->arity) || (spec->arity < 0 && argc < -spec->arity))
    return reject(ErrWrongArgs(spec->name));
  if (std::string denied = CheckAcl(spec); !denied.empty()) {
    if (close_after_write_) return;  // the user is gone: no reply, the connection closes
    return reject(denied);
  }
  // Cluster mode: a key of a slot another node owns is redirected (as Redis
  // Cluster does, after the ACL check).
  if (sh.cluster != nullptr)
    if (std::string route = ClusterRoute(*sh.cluster, *spec, args_, server_->cluster_held()); !route.empty()) return reject(route);
  if ((spec->flags & kCmdDenyOom) && server_->config().maxmemory() > 0 &&
      server_->used_memory.load(std::memory_order_relaxed) > server_->config().maxmemory())
    return reject("OOM command not allowed when used memory > 'maxmemory'.");
  // Cluster mode: a keyed write goes through the log (SendLogged).
  const bool logged = IsClusterWrite(spec, shard);
  if (tx_.active && logged) return reject("ERR write commands inside MULTI are not available in cluster mode");
  if (tx_.active && !(spec->flags & kCmdTxControl)) {  // MULTI: queued for EXEC
    if (spec->flags & kCmdNoMulti) return reject("ERR Command not allowed inside a transaction");
    Enqueue(server_->shards(), tx_, spec, args_);
    return writer_.Simple("QUEUED");
  }
  if (spec->flags & kCmdWrite) sh.counters.Add(sh.counters.writes, 1);
  PublishBuffers();  // qbuf includes the command being run, as Redis shows it
  call_start_ns_ = chained ? clock_ns_ : MonotonicNs();
  call_errors_ = writer_.errors();
  CommandContext ctx{server_, this, spec, args_, writer_, shard, &sh.store, key_hash_, NowMs()};
  if (logged) SendLogged(ctx);
  else spec->handler(ctx);
  if ((spec->flags & kCmdWrite) && !logged) {
    // A single-key write that succeeded goes to its shard's append-only
    // file (multi-shard ones log their parts where they apply them), and
    // under appendfsync always the replies wait for it (FlushAndRead).
    if (!(spec->flags & kCmdMultiShard) && !suspended_ && writer_.errors() == call_errors_)
      aof::LogWrite(sh.store, aof::Kind::kCommand, ctx.now_ms, args_);
    aof_wait_ = true;
  }
  if (!suspended_) FinishCall(shard, spec);
}

// After a command's reply is written (at once, or when its fan-out ends):
// its time goes into the shard's command statistics and, when slow, into
// the shard's slow log. A fan-out's time includes the other shards' work.
void Connection::FinishCall(int shard, const CommandSpec* spec) {
  const uint64_t end = MonotonicNs();
  const uint64_t ns = end - call_start_ns_;
  clock_ns_ = end;
  clock_chained_ = true;
  Shard& sh = server_->shards().shard(shard);
  const Config& cfg = server_->config();
  sh.command_stats->Call(spec->index, ns, writer_.errors() != call_errors_, cfg.latency_tracking());
  const int64_t slower_than = cfg.slowlog_log_slower_than();
  if (slower_than < 0 || static_cast<int64_t>(ns / 1000) < slower_than) return;
  SlowLogEntry e;
  e.id = SlowLog::NextId();
  e.time_s = NowMs() / 1000;
  e.duration_us = ns / 1000;
  e.args = SlowLog::CutArgs(args_);
  e.peer = peer_;
  e.name = name();
  sh.slowlog.Add(std::move(e), cfg.slowlog_max_len());
}

void Connection::Resume(int shard) {
  suspended_ = false;
  if (const CommandSpec* spec = last_cmd_.load(std::memory_order_relaxed)) FinishCall(shard, spec);
  Process(shard);
}

void Connection::FlushAndRead() {
  if (closed_) return;
  if (killed_) return Close();
  // appendfsync always: the replies go once the writes are fsynced.
  const bool durable = std::exchange(aof_wait_, false) && server_->aof().replies_wait();
  if (tls_) {
    if (!durable) return Flush();
    return server_->aof().WhenDurable([self = shared_from_this()] {
      self->server_->shards().Post(self->home_, [self] { self->Flush(); });
    });
  }
  if (wbuf_.empty() && !durable) return Flush();  // nothing to write: the next read at once
  // As Redis writes its replies before it sleeps: the write waits until
  // every connection the loop found ready has run, so a client's wake-up
  // serves the replies of many of its connections, and under appendfsync
  // always one fsync serves the whole pass (docs/architecture.md, "Replies").
  Shard& home = server_->shards().shard(home_);
  (durable ? home.durable_queue : home.flush_queue).push_back(shared_from_this());
  if (home.flush_posted) return;
  home.flush_posted = true;
  asio::post(home.io, [&home] { FlushQueued(home); });
}

void Connection::FlushQueued(Shard& home) {
  home.flush_posted = false;
  if (!home.durable_queue.empty()) {
    // The connections that wrote wait for one fsync of everything appended
    // by now; the others go at once.
    auto batch = std::make_shared<std::vector<std::shared_ptr<Connection>>>();
    batch->swap(home.durable_queue);
    AofManager& aof = batch->front()->server_->aof();
    aof.WhenDurable([batch, &home] {
      asio::post(home.io, [batch] {
        for (auto& c : *batch) c->Flush();
      });
    });
  }
  thread_local std::vector<std::shared_ptr<Connection>> batch;
  batch.swap(home.flush_queue);
  for (auto& c : batch) c->Flush();
  batch.clear();
}

void Connection::Flush() {
  if (closed_) return;
  if (killed_) return Close();
  if (wbuf_.empty()) {
    if (close_after_write_) return Close();
    return DoRead();
  }
  server_->shards().shard(home_).counters.Add(server_->shards().shard(home_).counters.net_output, wbuf_.size());
  auto done = [self = shared_from_this()](const boost::system::error_code& ec, size_t) { self->Written(ec); };
  if (tls_) return asio::async_write(*tls_, asio::buffer(wbuf_), std::move(done));  // records: the stream's job
  // Try to send everything now (the common case): no completion to queue.
  boost::system::error_code wec;
  size_t sent = socket_.write_some(asio::buffer(wbuf_), wec);
  if (!wec && sent == wbuf_.size()) {
    wbuf_.clear();
    if (close_after_write_) return Close();
    // More requests were read: they run after the rest of the queue is written.
    if (more_input_) return asio::post(server_->shards().shard(home_).io, [self = shared_from_this()] { self->Process(self->home_); });
    return DoRead();
  }
  if (wec && wec != asio::error::would_block && wec != asio::error::try_again) return Close();
  if (wec) sent = 0;
  wbuf_.erase(0, sent);
  asio::async_write(socket_, asio::buffer(wbuf_), std::move(done));
}

void Connection::Written(const boost::system::error_code& ec) {
  if (ec) return Close();
  if (wbuf_.capacity() > 4 * kFlushThreshold) {
    std::string().swap(wbuf_);
  } else {
    wbuf_.clear();
  }
  if (close_after_write_) return Close();
  if (more_input_) return Process(home_);
  DoRead();
}

void CommandContext::FanOut(const std::vector<int>& shards, std::function<void(int, ShardStore&)> per_shard,
                            std::function<void(ReplyWriter&)> finish) {
  ShardSet& set = server->shards();
  if (ShardSet::inline_posts()) {  // inside EXEC: every shard is ours
    for (int s : shards) per_shard(s, set.shard(s).store);
    finish(out);
    return;
  }
  if (shards.empty() || (shards.size() == 1 && shards[0] == shard)) {
    if (!shards.empty()) per_shard(shard, *store);
    finish(out);
    return;
  }
  struct State {
    std::atomic<size_t> remaining;
    std::function<void(int, ShardStore&)> per_shard;
    std::function<void(ReplyWriter&)> finish;
    std::shared_ptr<Connection> conn;
    int origin;
  };
  auto st = std::make_shared<State>();
  st->remaining = shards.size();
  st->per_shard = std::move(per_shard);
  st->finish = std::move(finish);
  st->conn = conn->self();
  st->origin = shard;
  conn->Suspend();
  for (int s : shards) {
    set.Post(s, [st, s, &set] {
      st->per_shard(s, set.shard(s).store);
      if (st->remaining.fetch_sub(1, std::memory_order_acq_rel) == 1) {
        set.Post(st->origin, [st] {
          st->finish(st->conn->writer());
          st->conn->Resume(st->origin);
        });
      }
    });
  }
}

void CommandContext::FanOut(std::shared_ptr<const ShardPlan> plan,
                            std::function<void(ShardStore&, std::span<const uint32_t>)> per_shard,
                            std::function<void(ReplyWriter&)> finish) {
  const std::vector<int>& shards = plan->shards();
  FanOut(
      shards, [plan = std::move(plan), f = std::move(per_shard)](int s, ShardStore& st) { f(st, plan->indexes(s)); },
      std::move(finish));
}

std::shared_ptr<const ShardPlan> CommandContext::PlanArgs(size_t first, size_t step) const {
  size_t n = args.size() > first ? (args.size() - first + step - 1) / step : 0;
  return std::make_shared<const ShardPlan>(
      ShardPlan::Build(server->shards().size(), n, [&](size_t i) { return args[first + i * step]; }));
}

std::function<void(std::function<void(ReplyWriter&)>)> CommandContext::Defer() {
  if (ShardSet::inline_posts()) {  // inside EXEC: the reply is written at once
    ReplyWriter* w = &out;
    return [w](std::function<void(ReplyWriter&)> reply) { reply(*w); };
  }
  ShardSet* set = &server->shards();
  std::shared_ptr<Connection> self = conn->self();
  int origin = shard;
  conn->Suspend();
  return [set, self, origin](std::function<void(ReplyWriter&)> reply) {
    set->Post(origin, [self, origin, reply = std::move(reply)] {
      reply(self->writer());
      self->Resume(origin);
    });
  };
}

}  // namespace fkv
