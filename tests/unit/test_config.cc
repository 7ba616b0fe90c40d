// Unit tests of server/config: files, overrides, units, live vs immutable.
#include <doctest/doctest.h>

#include <cstdio>
#include <cstdlib>
#include <fstream>

#include "server/config.h"

using namespace fkv;

TEST_CASE("defaults are the documented values, in canonical form") {
  Config c;
  CHECK(c.proto_max_bulk_len() == 512ull << 20);
  CHECK(c.client_query_buffer_limit() == 1ull << 30);
  CHECK(c.maxclients() == 10000);
  CHECK(c.GetString("proto-max-bulk-len") == std::to_string(512ull << 20));
  c.ApplyArgs({"--port", "7000"});  // re-syncing must not change the limits
  CHECK(c.client_query_buffer_limit() == 1ull << 30);
  CHECK(c.port() == 7000);
}

TEST_CASE("memory and duration units") {
  uint64_t m;
  CHECK(ParseMemory("100", &m));
  CHECK(m == 100);
  CHECK(ParseMemory("1k", &m));
  CHECK(m == 1000);
  CHECK(ParseMemory("1kb", &m));
  CHECK(m == 1024);
  CHECK(ParseMemory("512mb", &m));
  CHECK(m == 512ull << 20);
  CHECK(ParseMemory("1GB", &m));
  CHECK(m == 1ull << 30);
  CHECK_FALSE(ParseMemory("12x", &m));
  CHECK_FALSE(ParseMemory("-1", &m));
  int64_t d;
  CHECK(ParseDurationMs("500ms", &d));
  CHECK(d == 500);
  CHECK(ParseDurationMs("5m", &d));
  CHECK(d == 300000);
  CHECK(ParseDurationMs("7d", &d));
  CHECK(d == 7 * 86400000LL);
  CHECK_FALSE(ParseDurationMs("5x", &d));
}

TEST_CASE("a config file with comments, quotes and overrides") {
  std::string path = "/tmp/fkv_test_config_" + std::to_string(::getpid()) + ".conf";
  {
    std::ofstream f(path);
    f << "# comment\n\nport 7000\nrequirepass \"se cret\"\nmaxmemory 1gb\nsave 900 1 300 10\nshards 3\n"
      << "user model on >pw ~user:* +@read\nuser ingest on nopass +fevent\n";
  }
  Config c;
  c.LoadFile(path);
  CHECK(c.port() == 7000);
  CHECK(c.shards() == 3);
  CHECK(c.maxmemory() == 1ull << 30);
  CHECK(c.GetString("requirepass") == "se cret");
  // `user` lines are kept in order for the ACL (checked when the server starts).
  CHECK(c.user_lines() == std::vector<std::string>{"user model on >pw ~user:* +@read", "user ingest on nopass +fevent"});
  CHECK(c.Get("user").empty());
  CHECK(c.GetString("save") == "900 1 300 10");
  c.ApplyArgs({"--port", "7001", "--save", ""});
  CHECK(c.port() == 7001);
  CHECK(c.GetString("save").empty());
  std::remove(path.c_str());
}

TEST_CASE("bad config names file and line") {
  std::string path = "/tmp/fkv_test_badconfig_" + std::to_string(::getpid()) + ".conf";
  {
    std::ofstream f(path);
    f << "port 7000\nmaxclients lots\n";
  }
  Config c;
  try {
    c.LoadFile(path);
    FAIL("expected ConfigError");
  } catch (const ConfigError& e) {
    CHECK(std::string(e.what()).find(path + ":2:") != std::string::npos);
  }
  CHECK_THROWS_AS(c.ApplyArgs({"--nosuch", "1"}), ConfigError);
  CHECK_THROWS_AS(c.ApplyArgs({"--port", "99999"}), ConfigError);
  CHECK_THROWS_AS(c.LoadFile("/nonexistent/featurekv.conf"), ConfigError);
  std::remove(path.c_str());
}

TEST_CASE("CONFIG SET refuses immutable directives and bad values") {
  Config c;
  CHECK(c.Set("port", {"7000"}, true) == "can't set immutable config");
  CHECK(c.Set("maxclients", {"abc"}, true).find("integer") != std::string::npos);
  CHECK(c.Set("maxclients", {"50"}, true).empty());
  CHECK(c.maxclients() == 50);
  CHECK(c.Set("requirepass", {"pw"}, true).empty());
  CHECK(c.GetString("requirepass") == "pw");
  CHECK(c.Set("user", {"bob", "on"}, true) == "can't set immutable config");
  auto all = c.Get("max*");
  CHECK(all.size() >= 3);  // maxclients, maxmemory, max-event-skew
}

TEST_CASE("relative paths in a conf file resolve against the file's directory") {
  char tmpl[] = "/tmp/fkv-conf-XXXXXX";
  REQUIRE(mkdtemp(tmpl) != nullptr);
  std::string dir = tmpl;
  {
    std::ofstream f(dir + "/featurekv.conf");
    f << "registry features.yaml\ndir data/../snaps\nlogfile /var/log/fkv.log\ndbfilename x.snap\n";
  }
  Config c;
  c.LoadFile(dir + "/featurekv.conf");
  CHECK(c.GetString("registry") == dir + "/features.yaml");
  CHECK(c.GetString("dir") == dir + "/snaps");
  CHECK(c.GetString("logfile") == "/var/log/fkv.log");  // absolute: kept
  CHECK(c.GetString("dbfilename") == "x.snap");          // a name inside dir, not a path
  // On the command line a relative path stays relative to the working directory.
  c.ApplyArgs({"--registry", "other.yaml"});
  CHECK(c.GetString("registry") == "other.yaml");
  std::remove((dir + "/featurekv.conf").c_str());
  std::remove(dir.c_str());
}
