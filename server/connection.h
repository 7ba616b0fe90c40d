// Connection: one client socket. Reads, parses pipelined requests, runs each
// command on the shard that owns its key (the processing "baton" hops to that
// shard's thread and back), and sends all replies of one read in one write.
// Socket I/O happens only on the home shard's thread; everything else about
// a connection is touched by whichever thread holds the baton, one at a time.
#pragma once

#include <atomic>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>

#include "protocol/reply_writer.h"
#include "protocol/resp_parser.h"
#include "server/acl.h"
#include "server/asio.h"
#include "server/tls.h"
#include "server/command.h"
#include "server/transaction.h"

namespace fkv {

class Server;
struct Shard;

class Connection : public std::enable_shared_from_this<Connection> {
 public:
  // tls: the context of a TLS listener's connection (nullptr: plain TCP).
  Connection(Server* server, int home, asio::ip::tcp::socket socket, uint64_t id,
             std::shared_ptr<asio::ssl::context> tls = nullptr);

  void Start();  // on the home thread
  // Any thread: close as soon as possible (CLIENT KILL, timeout). True for
  // the first request only, so a connection being closed is counted once.
  bool Kill();

  uint64_t id() const { return id_; }
  int home() const { return home_; }
  std::string name() const;
  void set_name(std::string n);
  // CLIENT SETINFO: the client library's name and version (CLIENT LIST).
  void set_lib(bool version, std::string v);
  int protocol() const { return writer_.protocol(); }
  void set_protocol(int p) {
    writer_.set_protocol(p);
    resp_.store(p, std::memory_order_relaxed);  // for Describe() on other threads
  }
  bool authenticated() const { return authenticated_; }
  // The ACL user (touched by whichever thread holds the baton). LogIn
  // authenticates as `u`; LogOut goes back to an unauthenticated default.
  const AclUser& user() const { return *user_; }
  void LogIn(std::shared_ptr<const AclUser> u);
  void LogOut();
  // The name of the authenticated user, "" before AUTH (any thread).
  std::string user_name() const;
  // The ACL LOG entry of a refusal on this connection (its CLIENT INFO
  // line), and the audit log's `denied` line.
  void LogDenied(std::string_view reason, std::string_view object);
  // One audit log line about this connection (client address, id, user).
  void Audit(std::string_view event, std::vector<std::pair<std::string, std::string>> details = {},
             std::string_view user = {});
  void CloseAfterReply() { close_after_write_ = true; }
  const std::string& peer() const { return peer_; }
  const std::string& local() const { return local_; }
  int64_t idle_ms(int64_t now_ms) const { return now_ms - last_interaction_ms_.load(std::memory_order_relaxed); }
  // One line of CLIENT LIST / CLIENT INFO (any thread).
  std::string Describe(int64_t now_ms) const;

  // Used by CommandContext::FanOut: the current command finishes later.
  void Suspend() { suspended_ = true; }
  void Resume(int shard);  // on the thread of `shard`
  ReplyWriter& writer() { return writer_; }
  // MULTI state (touched by whichever thread runs this connection's commands).
  Transaction& tx() { return tx_; }
  // This batch wrote (EXEC): under appendfsync always its replies wait for the fsync.
  void NoteWrite() { aof_wait_ = true; }
  std::shared_ptr<Connection> self() { return shared_from_this(); }
  // For handlers that plan the commands of a pipeline ahead (FEVENT,
  // docs/architecture.md, "Planning a pipeline ahead"): the bytes already
  // read after the command being run (valid until the handler returns),
  // and a parse of the multibulk command starting at `at` inside them that
  // consumes nothing: the byte after it, or nullptr when it is incomplete,
  // inline, malformed or outside those bytes. The views point into the
  // read buffer, where the parser will find the same bytes.
  std::string_view Unparsed() const { return {rbuf_.get() + rpos_ + consumed_, rend_ - rpos_ - consumed_}; }
  const char* PeekCommand(const char* at, ArgList* args);
  // Bumped whenever the read buffer may move or be overwritten (DoRead):
  // a view into it taken under one generation is stale under another.
  uint64_t read_generation() const { return read_gen_; }

  // The flushes queued on shard `home` (its thread), in order; those that
  // wait for appendfsync always go once it has fsynced.
  static void FlushQueued(Shard& home);

 private:
  void Process(int shard);   // the parse/dispatch loop, on `shard`'s thread
  void Execute(int shard);   // runs the parsed command on this shard
  void FinishCall(int shard, const CommandSpec* spec);  // statistics and slow log of the command just run
  void FlushAndRead();       // home thread: queues the flush behind the other ready connections
  void Flush();              // home thread: one write of every reply, then the next read
  void Written(const boost::system::error_code& ec);  // after an async write of wbuf_, home thread
  void DoRead();             // home thread
  void Close();              // home thread

  Server* server_;
  const int home_;
  asio::ip::tcp::socket socket_;
  const uint64_t id_;
  const int fd_;  // for CLIENT LIST (the socket itself is touched by its thread only)
  // TLS: the stream over socket_ and the context it uses (kept alive here:
  // CONFIG SET tls-* builds a new one for new connections).
  std::shared_ptr<asio::ssl::context> tls_ctx_;
  std::unique_ptr<asio::ssl::stream<asio::ip::tcp::socket&>> tls_;
  std::unique_ptr<asio::steady_timer> handshake_timer_;
  std::string peer_, local_;
  int64_t created_ms_;

  // Read buffer: [rpos_, rend_) holds unconsumed bytes.
  std::unique_ptr<char[]> rbuf_;
  size_t rcap_ = 0, rpos_ = 0, rend_ = 0;
  RequestParser parser_;
  RequestParser peek_parser_;     // PeekCommand's: never touches parser_'s state
  uint64_t read_gen_ = 0;
  ArgList args_;
  size_t consumed_ = 0;           // bytes of the parsed request
  bool have_cmd_ = false;         // args_ holds a parsed, not yet run request
  const CommandSpec* spec_ = nullptr;
  int target_ = -1;               // shard that must run it
  uint64_t key_hash_ = 0;
  uint64_t call_start_ns_ = 0;    // MonotonicNs() when the running command started
  uint64_t call_errors_ = 0;      // writer_.errors() then
  uint64_t clock_ns_ = 0;         // when the last command ended
  bool clock_chained_ = false;    // the next command of this Process loop starts at clock_ns_

  std::string wbuf_;
  ReplyWriter writer_;
  bool suspended_ = false;
  bool close_after_write_ = false;
  bool more_input_ = false;       // stopped to flush with requests pending
  bool aof_wait_ = false;         // wrote since the last flush: under appendfsync always, wait first
  bool closed_ = false;
  bool authenticated_ = false;
  std::shared_ptr<const AclUser> user_;
  uint64_t acl_epoch_ = 0;         // Acl::epoch() when user_ was last looked up
  // The permission checks before running a command: "" or the refusal.
  std::string CheckAcl(const CommandSpec* spec);
  std::atomic<bool> killed_{false};
  std::atomic<bool> kill_requested_{false};
  std::atomic<int64_t> last_interaction_ms_{0};
  std::atomic<const CommandSpec*> last_cmd_{nullptr};
  // Buffer figures for CLIENT LIST, published by whichever thread holds the
  // baton (after a read, before each command) so Describe() reads them from
  // any thread without racing on the buffers themselves.
  void PublishBuffers() {
    qbuf_.store(rend_ - rpos_, std::memory_order_relaxed);
    qbuf_free_.store(rcap_ - rend_, std::memory_order_relaxed);
    rbs_.store(rcap_, std::memory_order_relaxed);
    rbp_.store(rend_, std::memory_order_relaxed);
    wbuf_cap_.store(wbuf_.capacity(), std::memory_order_relaxed);
  }
  std::atomic<size_t> qbuf_{0}, qbuf_free_{0}, rbs_{0}, rbp_{0}, wbuf_cap_{0};
  std::atomic<int> resp_{2};
  mutable std::mutex name_mu_;
  std::string name_, lib_name_, lib_ver_, user_name_;  // under name_mu_
  Transaction tx_;

  // Cluster mode's logged writes (docs/architecture.md, "Cluster mode"):
  // a pipeline's consecutive writes are sent at once, each reply coming
  // into its slot when this node has run the write from the log; any other
  // command, and the end of the input, first waits for every slot (so the
  // replies keep their order and a read sees the writes before it).
  struct LoggedReplies {
    struct Slot {
      bool ready = false;
      std::string bytes;  // the reply, once ready
    };
    std::mutex mu;
    std::deque<std::shared_ptr<Slot>> slots;  // in command order
    std::function<void()> wake;  // set while the connection waits for the front slot
  };
  // A keyed write in cluster mode: sent through the log (refused in MULTI).
  bool IsClusterWrite(const CommandSpec* spec, int shard) const;
  void SendLogged(CommandContext& c);
  // Moves the ready front slots' replies into wbuf_; true when none is left
  // waiting, else the connection is suspended until the front one is ready
  // (then Process runs again on `shard`).
  bool DrainLogged(int shard);
  // What was written to wbuf_ from out_before on goes behind the replies
  // still due (an error reply while logged writes wait).
  void KeepAfterLogged(size_t out_before);
  std::shared_ptr<LoggedReplies> logged_ = std::make_shared<LoggedReplies>();
  size_t logged_pending_ = 0;  // slots pushed, not drained (touched with the baton)
};

}  // namespace fkv
