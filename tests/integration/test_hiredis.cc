// Integration tests through hiredis (C): the real server binary on loopback,
// RESP2 (Debian's hiredis 0.14 has no RESP3; RESP3 is covered by the Python
// raw-socket tests and redis-cli -3).
#include <arpa/inet.h>
#include <doctest/doctest.h>
#include <hiredis/hiredis.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <atomic>
#include <ctime>
#include <chrono>
#include <memory>
#include <string>
#include <thread>
#include <vector>

#include "tests/support/server_process.h"

using fkv::test::ServerProcess;

namespace {

struct ReplyDeleter {
  void operator()(redisReply* r) const { freeReplyObject(r); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct Client {
  redisContext* c = nullptr;
  explicit Client(int port) {
    timeval tv{5, 0};
    c = redisConnectWithTimeout("127.0.0.1", port, tv);
    REQUIRE(c != nullptr);
    REQUIRE(c->err == 0);
    redisSetTimeout(c, tv);
  }
  ~Client() { redisFree(c); }
  Reply Cmd(const std::vector<std::string>& args) {
    std::vector<const char*> argv;
    std::vector<size_t> lens;
    for (auto& a : args) {
      argv.push_back(a.data());
      lens.push_back(a.size());
    }
    return Reply(static_cast<redisReply*>(redisCommandArgv(c, static_cast<int>(args.size()), argv.data(), lens.data())));
  }
};

std::string Str(const Reply& r) {
  REQUIRE(r);
  return std::string(r->str, r->len);
}

// A raw TCP client: sends bytes, reads what comes until `until` or close.
struct Raw {
  int fd = -1;
  explicit Raw(int port) {
    fd = socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_port = htons(static_cast<uint16_t>(port));
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    REQUIRE(connect(fd, reinterpret_cast<sockaddr*>(&a), sizeof a) == 0);
    timeval tv{5, 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  }
  ~Raw() { close(fd); }
  void Send(const std::string& s) { REQUIRE(send(fd, s.data(), s.size(), MSG_NOSIGNAL) == static_cast<ssize_t>(s.size())); }
  // Reads until `until` appears, the peer closes, or 5 s pass.
  std::string ReadUntil(const std::string& until, bool* closed = nullptr) {
    std::string got;
    char buf[4096];
    for (int i = 0; i < 10000; i++) {
      if (!until.empty() && got.find(until) != std::string::npos) break;
      ssize_t n = recv(fd, buf, sizeof buf, 0);
      if (n <= 0) {
        if (closed) *closed = n == 0;
        break;
      }
      got.append(buf, static_cast<size_t>(n));
    }
    return got;
  }
};

// A client thread's connection (10 s timeouts), or null with `failures` counted.
redisContext* ConnectOrCount(int port, std::atomic<int>& failures) {
  timeval tv{10, 0};
  redisContext* c = redisConnectWithTimeout("127.0.0.1", port, tv);
  if (c == nullptr || c->err) {
    failures++;
    if (c) redisFree(c);
    return nullptr;
  }
  redisSetTimeout(c, tv);
  return c;
}

}  // namespace

TEST_CASE("strings, hashes and keys through hiredis") {
  ServerProcess srv({"--shards", "3"});
  Client cl(srv.port());
  CHECK(Str(cl.Cmd({"PING"})) == "PONG");
  CHECK(Str(cl.Cmd({"SET", "user:1", "alice"})) == "OK");
  CHECK(Str(cl.Cmd({"GET", "user:1"})) == "alice");
  CHECK(cl.Cmd({"GET", "nosuch"})->type == REDIS_REPLY_NIL);
  CHECK(Str(cl.Cmd({"MSET", "a", "1", "b", "2", "c", "3"})) == "OK");
  auto mg = cl.Cmd({"MGET", "a", "b", "nosuch", "c"});
  REQUIRE(mg->elements == 4);
  CHECK(std::string(mg->element[0]->str) == "1");
  CHECK(mg->element[2]->type == REDIS_REPLY_NIL);
  CHECK(std::string(mg->element[3]->str) == "3");
  CHECK(cl.Cmd({"INCRBY", "a", "41"})->integer == 42);
  CHECK(Str(cl.Cmd({"INCRBYFLOAT", "a", "0.5"})) == "42.5");
  CHECK(cl.Cmd({"HSET", "h", "f1", "v1", "f2", "v2"})->integer == 2);
  auto hm = cl.Cmd({"HMGET", "h", "f2", "zz", "f1"});
  REQUIRE(hm->elements == 3);
  CHECK(std::string(hm->element[0]->str) == "v2");
  CHECK(hm->element[1]->type == REDIS_REPLY_NIL);
  CHECK(cl.Cmd({"HINCRBY", "h", "n", "5"})->integer == 5);
  CHECK(cl.Cmd({"HLEN", "h"})->integer == 3);
  CHECK(Str(cl.Cmd({"TYPE", "h"})) == "hash");
  CHECK(Str(cl.Cmd({"TYPE", "a"})) == "string");
  CHECK(cl.Cmd({"EXISTS", "a", "b", "h", "nosuch", "a"})->integer == 4);
  CHECK(cl.Cmd({"DEL", "a", "b", "nosuch"})->integer == 2);
  CHECK(cl.Cmd({"DBSIZE"})->integer == 3);
  auto wt = cl.Cmd({"GET", "h"});
  CHECK(wt->type == REDIS_REPLY_ERROR);
  CHECK(Str(wt) == "WRONGTYPE Operation against a key holding the wrong kind of value");
  CHECK(srv.Stop() == 0);
}

TEST_CASE("unknown command and wrong arity use Redis's error texts") {
  ServerProcess srv({"--shards", "2"});
  Client cl(srv.port());
  CHECK(Str(cl.Cmd({"NOSUCH", "a", "b"})) == "ERR unknown command 'NOSUCH', with args beginning with: 'a' 'b' ");
  CHECK(Str(cl.Cmd({"GET"})) == "ERR wrong number of arguments for 'get' command");
  CHECK(Str(cl.Cmd({"HSET", "h", "f"})) == "ERR wrong number of arguments for 'hset' command");
  CHECK(Str(cl.Cmd({"SET", "k", "v", "EX", "abc"})) == "ERR value is not an integer or out of range");
  CHECK(Str(cl.Cmd({"SET", "k", "v", "BOGUS"})) == "ERR syntax error");
  CHECK(Str(cl.Cmd({"PING"})) == "PONG");  // the connection stays usable
}

TEST_CASE("CLIENT SETINFO names the library in CLIENT INFO and CLIENT LIST, as Redis 7.2") {
  ServerProcess srv({"--shards", "2"});
  Client cl(srv.port());
  Client other(srv.port());
  CHECK(Str(cl.Cmd({"CLIENT", "SETINFO", "LIB-NAME", "hiredis"})) == "OK");
  CHECK(Str(cl.Cmd({"CLIENT", "SETINFO", "lib-ver", "1.1.0"})) == "OK");
  std::string info = Str(cl.Cmd({"CLIENT", "INFO"}));
  CHECK(info.find(" lib-name=hiredis lib-ver=1.1.0 ") != std::string::npos);
  std::string list = Str(other.Cmd({"CLIENT", "LIST"}));
  CHECK(list.find("lib-name=hiredis lib-ver=1.1.0") != std::string::npos);
  CHECK(list.find("lib-name= lib-ver= ") != std::string::npos);  // the other client set nothing
  CHECK(Str(cl.Cmd({"CLIENT", "SETINFO", "lib-color", "x"})) == "ERR Unrecognized option 'lib-color'");
  CHECK(Str(cl.Cmd({"CLIENT", "SETINFO", "lib-name", "a b"})) ==
        "ERR lib-name cannot contain spaces, newlines or special characters.");
  CHECK(Str(cl.Cmd({"CLIENT", "SETINFO", "LIB-NAME", ""})) == "OK");  // empty clears it
  CHECK(Str(cl.Cmd({"CLIENT", "INFO"})).find(" lib-name= lib-ver=1.1.0 ") != std::string::npos);
  CHECK(srv.Stop() == 0);
}

TEST_CASE("ACL users through hiredis: AUTH user pass, NOPERM for commands, subcommands and keys") {
  ServerProcess srv({"--shards", "2", "--user", "reader", "on", ">r-pw", "~user:*", "+@read", "+@connection",
                     "-@dangerous", "--user", "default", "off"});
  Client cl(srv.port());
  CHECK(Str(cl.Cmd({"GET", "user:1"})) == "NOAUTH Authentication required.");
  CHECK(Str(cl.Cmd({"AUTH", "reader", "wrong"})) == "WRONGPASS invalid username-password pair or user is disabled.");
  CHECK(Str(cl.Cmd({"AUTH", "reader", "r-pw"})) == "OK");
  Reply r = cl.Cmd({"GET", "user:1"});
  CHECK(r->type == REDIS_REPLY_NIL);
  CHECK(Str(cl.Cmd({"SET", "user:1", "x"})) == "NOPERM this user has no permissions to run the 'set' command");
  CHECK(Str(cl.Cmd({"GET", "product:1"})) == "NOPERM this user has no permissions to access one of the keys used as arguments");
  CHECK(Str(cl.Cmd({"CLIENT", "SETNAME", "model-1"})) == "OK");
  CHECK(Str(cl.Cmd({"CLIENT", "LIST"})) == "NOPERM this user has no permissions to run the 'client|list' command");
  CHECK(srv.Stop() == 0);
}

TEST_CASE("MULTI/EXEC through hiredis: queued replies, one array from EXEC, WATCH") {
  ServerProcess srv({"--shards", "4"});
  Client cl(srv.port());
  Client other(srv.port());
  CHECK(Str(cl.Cmd({"MULTI"})) == "OK");
  CHECK(Str(cl.Cmd({"SET", "x", "1"})) == "QUEUED");
  CHECK(Str(cl.Cmd({"MSET", "k1", "a", "k2", "b", "k3", "c"})) == "QUEUED");
  CHECK(Str(cl.Cmd({"MGET", "x", "k1", "k2", "k3"})) == "QUEUED");
  auto ex = cl.Cmd({"EXEC"});
  REQUIRE(ex->type == REDIS_REPLY_ARRAY);
  REQUIRE(ex->elements == 3);
  CHECK(std::string(ex->element[0]->str) == "OK");
  REQUIRE(ex->element[2]->elements == 4);
  CHECK(std::string(ex->element[2]->element[3]->str) == "c");
  CHECK(Str(cl.Cmd({"WATCH", "x", "k2"})) == "OK");
  CHECK(Str(other.Cmd({"SET", "k2", "changed"})) == "OK");
  CHECK(Str(cl.Cmd({"MULTI"})) == "OK");
  CHECK(Str(cl.Cmd({"SET", "x", "2"})) == "QUEUED");
  CHECK(cl.Cmd({"EXEC"})->type == REDIS_REPLY_NIL);  // aborted: RESP2 *-1
  CHECK(Str(cl.Cmd({"GET", "x"})) == "1");
  CHECK(srv.Stop() == 0);
}

TEST_CASE("a pipeline of 10,000 commands answers every one, in order") {
  ServerProcess srv({"--shards", "4"});
  Client cl(srv.port());
  const int n = 10000;
  for (int i = 0; i < n; i++) {
    std::string k = "p:" + std::to_string((i / 2) % 500);  // GET i reads the key SET i-1 wrote
    if (i % 2 == 0) redisAppendCommand(cl.c, "SET %s %d", k.c_str(), i);
    else redisAppendCommand(cl.c, "GET %s", k.c_str());
  }
  for (int i = 0; i < n; i++) {
    void* rv = nullptr;
    INFO("reply " << i << ": " << cl.c->errstr);
    REQUIRE(redisGetReply(cl.c, &rv) == REDIS_OK);
    Reply r(static_cast<redisReply*>(rv));
    if (i % 2 == 0) {
      REQUIRE(Str(r) == "OK");
    } else {
      REQUIRE(Str(r) == std::to_string(i - 1));  // the SET just before it, same key
    }
  }
}

TEST_CASE("200 concurrent clients each see their own writes") {
  ServerProcess srv({"--shards", "4"});
  std::atomic<int> failures{0};
  std::vector<std::thread> threads;
  for (int t = 0; t < 200; t++) {
    threads.emplace_back([&, t] {
      redisContext* c = ConnectOrCount(srv.port(), failures);
      if (c == nullptr) return;
      for (int i = 0; i < 50; i++) {
        std::string k = "c";  // appends: g++ 12 at -O3 warns falsely on "c" + std::string
        k.append(std::to_string(t)).append(":").append(std::to_string(i));
        auto* r1 = static_cast<redisReply*>(redisCommand(c, "SET %s %d", k.c_str(), t * 1000 + i));
        auto* r2 = static_cast<redisReply*>(redisCommand(c, "GET %s", k.c_str()));
        if (!r1 || !r2 || r2->type != REDIS_REPLY_STRING || std::string(r2->str) != std::to_string(t * 1000 + i)) failures++;
        if (r1) freeReplyObject(r1);
        if (r2) freeReplyObject(r2);
      }
      redisFree(c);
    });
  }
  for (auto& th : threads) th.join();
  CHECK(failures.load() == 0);
  Client cl(srv.port());
  CHECK(cl.Cmd({"DBSIZE"})->integer == 200 * 50);
}

// Replies of a loop pass are written together, after every ready
// connection ran (docs/architecture.md, "Replies"): many clients pipelining
// at once must each get exactly their own replies, in order, also while
// others vanish with replies queued for them.
TEST_CASE("40 clients pipelining at once each get their own replies in order, beside clients that hang up") {
  for (const char* shards : {"1", "3"}) {
    INFO("shards " << shards);
    ServerProcess srv({"--shards", shards});
    std::atomic<int> failures{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 40; t++) {
      threads.emplace_back([&, t] {
        redisContext* c = ConnectOrCount(srv.port(), failures);
        if (c == nullptr) return;
        std::string k = "pipe";
        k.append(std::to_string(t));
        for (int round = 0; round < 5; round++) {
          if (t % 8 == 7 && round == 2) {  // sends a pipeline and hangs up without reading
            for (int i = 0; i < 200; i++) redisAppendCommand(c, "INCR %s", k.c_str());
            int done = 0;
            while (!done && redisBufferWrite(c, &done) == REDIS_OK) {
            }
            break;
          }
          for (int i = 0; i < 200; i++) {
            if (i % 2 == 0) redisAppendCommand(c, "INCR %s", k.c_str());
            else redisAppendCommand(c, "ECHO %s:%d:%d", k.c_str(), round, i);
          }
          for (int i = 0; i < 200; i++) {
            void* rv = nullptr;
            if (redisGetReply(c, &rv) != REDIS_OK) {
              failures++;
              redisFree(c);
              return;
            }
            Reply r(static_cast<redisReply*>(rv));
            const bool ok = i % 2 == 0
                                ? r->type == REDIS_REPLY_INTEGER && r->integer == round * 100 + i / 2 + 1
                                : r->type == REDIS_REPLY_STRING &&
                                      std::string(r->str, r->len) == k + ":" + std::to_string(round) + ":" + std::to_string(i);
            if (!ok) failures++;
          }
        }
        redisFree(c);
      });
    }
    for (auto& th : threads) th.join();
    CHECK(failures.load() == 0);
    Client cl(srv.port());
    CHECK(Str(cl.Cmd({"GET", "pipe0"})) == "500");
    CHECK(Str(cl.Cmd({"PING"})) == "PONG");
  }
}

TEST_CASE("keys with a TTL expire, lazily and by the active sweep") {
  ServerProcess srv({"--shards", "2", "--hz", "50"});
  Client cl(srv.port());
  CHECK(Str(cl.Cmd({"SET", "t", "v", "PX", "150"})) == "OK");
  auto pttl = cl.Cmd({"PTTL", "t"})->integer;
  CHECK(pttl > 0);
  CHECK(pttl <= 150);
  CHECK(cl.Cmd({"TTL", "nosuch"})->integer == -2);
  CHECK(Str(cl.Cmd({"SET", "forever", "v"})) == "OK");
  CHECK(cl.Cmd({"TTL", "forever"})->integer == -1);
  for (int i = 0; i < 500; i++) cl.Cmd({"SET", "e:" + std::to_string(i), "v", "PX", "100"});
  // Nothing reads the e:* keys; DBSIZE must drop to the 1 persistent key.
  long long size = -1;
  auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
  while (std::chrono::steady_clock::now() < deadline) {
    size = cl.Cmd({"DBSIZE"})->integer;
    if (size == 1) break;
    std::this_thread::sleep_for(std::chrono::milliseconds(20));
  }
  CHECK(size == 1);
  CHECK(cl.Cmd({"GET", "t"})->type == REDIS_REPLY_NIL);
  CHECK(cl.Cmd({"EXPIRE", "forever", "100"})->integer == 1);
  CHECK(cl.Cmd({"PERSIST", "forever"})->integer == 1);
  CHECK(cl.Cmd({"TTL", "forever"})->integer == -1);
}

TEST_CASE("bad input: protocol errors close only the offending client") {
  ServerProcess srv({"--shards", "2", "--maxclients", "20"});
  {
    Raw r(srv.port());
    r.Send("*1\r\n$999999999999\r\n");
    bool closed = false;
    std::string got = r.ReadUntil("", &closed);
    CHECK(got == "-ERR Protocol error: invalid bulk length\r\n");
    CHECK(closed);
  }
  {
    Raw r(srv.port());
    r.Send("*99999999\r\n");
    bool closed = false;
    CHECK(r.ReadUntil("", &closed) == "-ERR Protocol error: invalid multibulk length\r\n");
    CHECK(closed);
  }
  // A half-sent command that goes silent blocks nobody else.
  Raw half(srv.port());
  half.Send("*3\r\n$3\r\nSET\r\n$1\r\n");
  Client cl(srv.port());
  CHECK(Str(cl.Cmd({"PING"})) == "PONG");
  // More clients than maxclients: the extra one is refused with an error.
  std::vector<std::unique_ptr<Raw>> many;
  for (int i = 0; i < 18; i++) many.push_back(std::make_unique<Raw>(srv.port()));
  for (auto& m : many) {  // make sure each is registered before the next probe
    m->Send("PING\r\n");
    REQUIRE(m->ReadUntil("\r\n") == "+PONG\r\n");
  }
  Raw extra(srv.port());
  bool closed = false;
  CHECK(extra.ReadUntil("", &closed) == "-ERR max number of clients reached\r\n");
  CHECK(closed);
  CHECK(Str(cl.Cmd({"PING"})) == "PONG");
  CHECK(srv.Stop() == 0);
}

TEST_CASE("feature commands through hiredis: FEVENT, FGET, FMGET, FWINDOW, FSET") {
  std::string reg = std::string(FKV_SOURCE_DIR) + "/conf/features.yaml";
  ServerProcess srv({"--shards", "3", "--registry", reg});
  Client cl(srv.port());
  long long now_s = static_cast<long long>(time(nullptr));
  auto ev = [&](int user, int product, const char* action, long long ts) {
    return "{\"user_id\":" + std::to_string(user) + ",\"product_id\":" + std::to_string(product) + ",\"action\":\"" + action +
           "\",\"timestamp\":" + std::to_string(ts) + "}";
  };
  auto r = cl.Cmd({"FEVENT", "user_events", ev(42, 7, "click", now_s - 30), ev(42, 8, "click", now_s - 20),
                   ev(42, 7, "purchase", now_s - 10), ev(43, 7, "view", now_s - 5)});
  REQUIRE(r->type == REDIS_REPLY_INTEGER);
  CHECK(r->integer == 4);
  auto bad = cl.Cmd({"FEVENT", "user_events", "not json", ev(44, 1, "click", now_s)});
  CHECK(Str(bad) == "ERR 1 of 2 events rejected: #1: invalid_json");
  auto samples = cl.Cmd({"FINGEST", "ERRORS"});  // RESP2: one flat array per sample
  REQUIRE(samples->elements == 1);
  REQUIRE(samples->element[0]->elements == 8);
  CHECK(std::string(samples->element[0]->element[1]->str) == "invalid_json");
  CHECK(std::string(samples->element[0]->element[3]->str) == "FEVENT user_events #1");
  CHECK(std::string(samples->element[0]->element[7]->str) == "not json");

  auto g = cl.Cmd({"FGET", "user:42", "clicks_5m", "purchases_1h", "products_1h", "last_action", "recent_products"});
  REQUIRE(g->elements == 5);
  CHECK(g->element[0]->integer == 2);
  CHECK(g->element[1]->integer == 1);
  CHECK(g->element[2]->integer == 2);
  CHECK(std::string(g->element[3]->str) == "purchase");
  REQUIRE(g->element[4]->elements == 3);
  CHECK(std::string(g->element[4]->element[0]->str) == "7");

  auto all = cl.Cmd({"FGET", "user:42"});  // RESP2: flat name/value array
  CHECK(all->elements == 16);
  CHECK(cl.Cmd({"FGET", "user:999", "clicks_5m"})->element[0]->type == REDIS_REPLY_NIL);
  CHECK(cl.Cmd({"FGET", "user:999"})->elements == 0);

  auto m = cl.Cmd({"FMGET", "user:42", "user:43", "product:7", "FEATURES", "clicks_1h"});
  CHECK(Str(m) == "ERR unknown feature 'clicks_1h' for entity 'product'");
  m = cl.Cmd({"FMGET", "user:42", "user:43", "user:44", "FEATURES", "clicks_1h", "last_action"});
  REQUIRE(m->elements == 3);
  CHECK(m->element[0]->element[0]->integer == 2);
  CHECK(std::string(m->element[1]->element[1]->str) == "view");
  CHECK(m->element[2]->element[0]->integer == 1);

  auto w = cl.Cmd({"FWINDOW", "product:7", "views", "5m"});
  CHECK(w->integer == 1);
  auto b = cl.Cmd({"FWINDOW", "user:42", "clicks", "2m", "BUCKETS", "1m"});
  REQUIRE(b->type == REDIS_REPLY_ARRAY);
  long long total = 0;
  for (size_t i = 0; i < b->elements; i++) total += b->element[i]->element[1]->integer;
  CHECK(total == 2);
  CHECK(Str(cl.Cmd({"FWINDOW", "user:42", "clicks", "2h"})).find("is larger than") != std::string::npos);

  CHECK(Str(cl.Cmd({"FSET", "user:42", "last_action", "logout"})) == "OK");
  auto la = cl.Cmd({"FGET", "user:42", "last_action"});
  REQUIRE(la->elements == 1);
  CHECK(std::string(la->element[0]->str) == "logout");
  CHECK(Str(cl.Cmd({"TYPE", "user:42"})) == "feature");
  auto ttl = cl.Cmd({"TTL", "user:42"})->integer;
  CHECK(ttl > 7 * 86400 - 120);
  CHECK(ttl <= 7 * 86400);
  CHECK(cl.Cmd({"DEL", "user:42"})->integer == 1);
  CHECK(cl.Cmd({"FGET", "user:42", "clicks_5m"})->element[0]->type == REDIS_REPLY_NIL);
  CHECK(srv.Stop() == 0);
}
