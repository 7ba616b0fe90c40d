#include <doctest/doctest.h>

#include "server/cluster.h"
#include "ingest/repartition.h"
#include "server/peer_client.h"
#include "storage/snapshot.h"

using namespace fkv;

TEST_CASE("cluster: key slots are Redis Cluster's (CRC16 XMODEM, hash tags)") {
  CHECK(KeySlot("123456789") == (0x31C3 & 16383));  // the CRC16 XMODEM check value
  CHECK(KeySlot("foo") == 12182);                     // as redis-cli CLUSTER KEYSLOT says
  CHECK(KeySlot("bar") == 5061);
  CHECK(KeySlot("{user1000}.following") == KeySlot("{user1000}.followers"));
  CHECK(KeySlot("{user1000}.following") == KeySlot("user1000"));
  CHECK(KeySlot("foo{}{bar}") == KeySlot("foo{}{bar}"));  // an empty tag: the whole key
  CHECK(KeySlot("foo{}{bar}") != KeySlot("bar"));
  CHECK(KeySlot("foo{{bar}}zap") == KeySlot("{bar"));     // from the first '{' to the next '}'
  CHECK(KeySlot("foo{bar}{zap}") == KeySlot("bar"));
  CHECK(KeySlot("") == 0);
}

TEST_CASE("cluster: partitions cut the slots into contiguous ranges, and the map finds owners") {
  for (int n : {1, 3, 8, 16, 100, 16384}) {
    int next = 0;
    for (int p = 0; p < n; p++) {
      SlotRange r = PartitionSlots(p, n);
      CHECK(r.first == next);
      CHECK(r.last >= r.first);
      CHECK(PartitionOfSlot(r.first, n) == p);
      CHECK(PartitionOfSlot(r.last, n) == p);
      next = r.last + 1;
    }
    CHECK(next == kClusterSlots);
  }
  ClusterNode a{"a", "127.0.0.1", 7000, true, {0, 1, 3}}, b{"b", "127.0.0.1", 7001, false, {2}};
  ClusterMap m(4, {a, b});
  CHECK(m.Complete());
  CHECK(m.OwnsSlot(0));
  CHECK(m.OwnerOfSlot(PartitionSlots(2, 4).first)->id == "b");
  auto ranges = m.RangesOf(m.nodes()[0]);
  REQUIRE(ranges.size() == 2);  // 0 and 1 merged, then 3
  CHECK(ranges[0].first == 0);
  CHECK(ranges[0].last == 8191);
  CHECK(ranges[1].first == 12288);
  CHECK(ranges[1].last == 16383);
  ClusterMap partial(4, {b});
  CHECK_FALSE(partial.Complete());
  CHECK(partial.OwnerOfSlot(0) == nullptr);
  CHECK(partial.Myself() == nullptr);
}

TEST_CASE("cluster: the membership log decides owners by claim epochs, releases and silence") {
  Membership m("me", 4);
  auto rec = [](std::string id, int port, int64_t t, std::vector<std::pair<int, uint64_t>> claims) {
    return MemberRecord{std::move(id), "127.0.0.1", port, t, std::move(claims)};
  };
  auto owner = [&](int64_t now, int p) {
    ClusterMap map = m.Map(now, 10'000);
    const ClusterNode* n = map.OwnerOfSlot(PartitionSlots(p, 4).first);
    return n ? n->id : std::string("-");
  };
  m.Apply(rec("a", 7001, 1000, {{0, 1}, {1, 1}}));
  m.Apply(rec("me", 7000, 1000, {{2, 1}, {3, 1}}));
  CHECK(owner(2000, 0) == "a");
  CHECK(owner(2000, 3) == "me");
  CHECK(m.Map(2000, 10'000).Complete());
  CHECK(m.Map(2000, 10'000).Myself()->port == 7000);
  // b takes partition 1 with a newer epoch; a's next heartbeat, still
  // claiming it at the old epoch (a zombie), does not take it back.
  CHECK(m.NextEpoch(1) == 2);
  m.Apply(rec("b", 7002, 1500, {{1, 2}}));
  CHECK(owner(2000, 1) == "b");
  m.Apply(rec("a", 7001, 1600, {{0, 1}, {1, 1}}));
  CHECK(owner(2000, 1) == "b");
  CHECK(owner(2000, 0) == "a");
  // A release: a's record without partition 0.
  m.Apply(rec("a", 7001, 1700, {}));
  CHECK(owner(2000, 0) == "-");
  CHECK_FALSE(m.Map(2000, 10'000).Complete());
  // A tie of epochs: the later record in the log wins.
  m.Apply(rec("a", 7001, 1800, {{0, 2}}));
  m.Apply(rec("b", 7002, 1800, {{0, 2}, {1, 2}}));
  CHECK(owner(2000, 0) == "b");
  // A node silent for the timeout owns nothing (this node always counts).
  CHECK(owner(1800 + 10'001, 0) == "-");
  CHECK(owner(1000 + 20'000, 3) == "me");
  // The record's JSON round-trips; bad ones are refused.
  MemberRecord r = rec("b", 7002, 1800, {{0, 2}, {5, 9}}), back;
  REQUIRE(DecodeMember(EncodeMember(r), &back));
  CHECK(back.id == "b");
  CHECK(back.port == 7002);
  CHECK(back.time_ms == 1800);
  CHECK(back.claims == r.claims);
  CHECK_FALSE(DecodeMember("{}", &back));
  CHECK_FALSE(DecodeMember(R"({"id":"x","ip":"h","port":0,"time":1,"claims":[]})", &back));
  CHECK_FALSE(DecodeMember(R"({"id":"x","ip":"h","port":1,"time":1,"claims":[[1]]})", &back));
  CHECK_FALSE(DecodeMember("not json", &back));
}

TEST_CASE("cluster: a repartition record round-trips, and what is not one is refused") {
  fkv::RepartitionRecord r;
  r.source = "user_events";
  r.topic = "user_events";
  r.partition = 7;
  r.offset = 123456789012;
  r.now_ms = 1700000000123;
  r.kafka_ts_ms = 1700000000000;
  r.has_key = true;
  r.key = std::string_view("k\0y", 3);
  r.payload = R"({"user_id":1})";
  std::string bytes;
  fkv::EncodeRepartition(r, &bytes);
  fkv::RepartitionRecord d;
  REQUIRE(fkv::DecodeRepartition(bytes, &d));
  CHECK(d.source == r.source);
  CHECK(d.topic == r.topic);
  CHECK(d.partition == 7);
  CHECK(d.offset == r.offset);
  CHECK(d.now_ms == r.now_ms);
  CHECK(d.kafka_ts_ms == r.kafka_ts_ms);
  CHECK(d.has_key);
  CHECK_FALSE(d.tombstone);
  CHECK(d.key == r.key);
  CHECK(d.payload == r.payload);
  // A tombstone: no payload.
  r.tombstone = true;
  r.payload = {};
  bytes.clear();
  fkv::EncodeRepartition(r, &bytes);
  REQUIRE(fkv::DecodeRepartition(bytes, &d));
  CHECK(d.tombstone);
  CHECK(d.payload.empty());
  // Every truncation, a byte too many, another version, bad flags.
  for (size_t n = 0; n < bytes.size(); n++) CHECK_FALSE(fkv::DecodeRepartition(std::string_view(bytes).substr(0, n), &d));
  CHECK_FALSE(fkv::DecodeRepartition(bytes + "x", &d));
  std::string v2 = bytes;
  v2[0] = 2;
  CHECK_FALSE(fkv::DecodeRepartition(v2, &d));
  std::string flags = bytes;
  flags[1] = 16;
  CHECK_FALSE(fkv::DecodeRepartition(flags, &d));
  flags[1] = 4;  // a command names no source
  CHECK_FALSE(fkv::DecodeRepartition(flags, &d));
  CHECK_FALSE(fkv::DecodeRepartition(R"({"user_id":1})", &d));
}

TEST_CASE("cluster: a logged write command round-trips with its arguments, binary ones too") {
  std::vector<std::string_view> args{"SET", std::string_view("k\0\r\n", 4), "", "PX", "100"};
  fkv::RepartitionRecord r;
  r.topic = "writes/abc";
  r.offset = 1700000000123456;
  r.now_ms = 1700000000123;
  r.command = true;
  r.resp3 = true;
  std::string payload, bytes;
  fkv::EncodeArgs(args, &payload);
  r.payload = payload;
  fkv::EncodeRepartition(r, &bytes);
  fkv::RepartitionRecord d;
  REQUIRE(fkv::DecodeRepartition(bytes, &d));
  CHECK(d.command);
  CHECK(d.resp3);
  CHECK(d.source.empty());
  CHECK(d.topic == "writes/abc");
  CHECK(d.offset == r.offset);
  std::vector<std::string_view> back;
  REQUIRE(fkv::DecodeArgs(d.payload, &back));
  CHECK(back == args);
  // A command record with a source, damaged arguments, no arguments.
  r.source = "user_events";
  bytes.clear();
  fkv::EncodeRepartition(r, &bytes);
  CHECK_FALSE(fkv::DecodeRepartition(bytes, &d));
  for (size_t n = 0; n < payload.size(); n++) CHECK_FALSE(fkv::DecodeArgs(std::string_view(payload).substr(0, n), &back));
  CHECK_FALSE(fkv::DecodeArgs(payload + "x", &back));
  std::string none;
  fkv::EncodeArgs({}, &none);
  CHECK_FALSE(fkv::DecodeArgs(none, &back));
  std::string huge = payload;
  huge[7] = 0x7f;  // a count no payload can hold
  CHECK_FALSE(fkv::DecodeArgs(huge, &back));
}

TEST_CASE("cluster: de-duplication drops what a fail-over sends again, per source partition") {
  fkv::DedupMarks m;
  CHECK(m.Admit("t", 0, 10));
  CHECK(m.Admit("t", 0, 11));
  CHECK(m.Admit("t", 1, 3));       // another source partition: its own mark
  CHECK(m.Admit("u", 0, 0));       // another topic too
  CHECK_FALSE(m.Admit("t", 0, 10));  // sent again from an older commit
  CHECK_FALSE(m.Admit("t", 0, 11));
  CHECK(m.Admit("t", 0, 12));
  CHECK(m.Admit("t", 0, 20));      // a gap (events no view of this partition takes)
  CHECK_FALSE(m.Admit("t", 0, 15));
  CHECK(m.marks().at({"t", 0}) == 21);
  fkv::DedupMarks n;
  n.Set("t", 0, 21);
  CHECK_FALSE(n.Admit("t", 0, 20));
  CHECK(n.Admit("t", 0, 21));
}

TEST_CASE("cluster: the snapshot's MARKS frame round-trips and refuses damage") {
  std::vector<fkv::snap::DedupMark> marks = {{0, "user_events", 3, 17}, {5, "orders", 0, 0}};
  std::string p = fkv::snap::EncodeMarks(marks);
  std::vector<fkv::snap::DedupMark> back;
  std::string err;
  REQUIRE(fkv::snap::DecodeMarks(p, &back, &err));
  REQUIRE(back.size() == 2);
  CHECK(back[0].repartition == 0);
  CHECK(back[0].topic == "user_events");
  CHECK(back[0].partition == 3);
  CHECK(back[0].next == 17);
  CHECK(back[1].topic == "orders");
  for (size_t n = 0; n < p.size(); n++) {
    back.clear();
    CHECK_FALSE(fkv::snap::DecodeMarks(std::string_view(p).substr(0, n), &back, &err));
  }
  back.clear();
  CHECK_FALSE(fkv::snap::DecodeMarks(p + "x", &back, &err));
}

TEST_CASE("cluster: RESP values are measured whole, RESP2 and RESP3, and arrays split into raw elements") {
  CHECK(RespValueLength("+OK\r\n") == 5);
  CHECK(RespValueLength("+OK\r") == 0);
  CHECK(RespValueLength(":12\r\nrest") == 5);
  CHECK(RespValueLength("$3\r\nabc\r\n") == 9);
  CHECK(RespValueLength("$3\r\nab") == 0);
  CHECK(RespValueLength("$-1\r\n") == 5);
  CHECK(RespValueLength("*-1\r\n") == 5);
  CHECK(RespValueLength("*2\r\n:1\r\n$1\r\nx\r\n") == 15);
  CHECK(RespValueLength("*2\r\n:1\r\n$1\r\nx\r") == 0);
  CHECK(RespValueLength("%1\r\n+a\r\n,1.5\r\n") == 14);
  CHECK(RespValueLength("|1\r\n+k\r\n+v\r\n:7\r\n") == 16);  // an attribute, then its value
  CHECK(RespValueLength("_\r\n") == 3);
  CHECK(RespValueLength("x\r\n") == SIZE_MAX);
  CHECK(RespValueLength("$abc\r\n") == SIZE_MAX);
  std::string deep(100, '*');
  for (size_t i = 0; i < 100; i++) deep.replace(i * 4, 1, "*1\r\n");
  CHECK(RespValueLength(deep) == SIZE_MAX);  // nesting past 64: refused, not a stack overflow
  std::vector<std::string_view> e;
  REQUIRE(SplitRespArray("*3\r\n:1\r\n*2\r\n$1\r\na\r\n_\r\n$-1\r\n", &e));
  REQUIRE(e.size() == 3);
  CHECK(e[0] == ":1\r\n");
  CHECK(e[1] == "*2\r\n$1\r\na\r\n_\r\n");
  CHECK(e[2] == "$-1\r\n");
  CHECK_FALSE(SplitRespArray("-ERR no\r\n", &e));
  CHECK_FALSE(SplitRespArray("*2\r\n:1\r\n", &e));
  CHECK_FALSE(SplitRespArray("*1\r\n:1\r\n:2\r\n", &e));
  CHECK(RespCommand({"GET", "k"}) == "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n");
}

TEST_CASE("cluster: a RESP reply arriving in pieces is measured as it grows, then the next one") {
  // An FMGET-like reply: an array of maps and nulls, with an attribute.
  std::string value = "*40\r\n";
  for (int i = 0; i < 40; i++)
    value += i % 7 == 0 ? std::string("_\r\n")
                        : "%2\r\n$4\r\nname\r\n$" + std::to_string(std::to_string(i).size()) + "\r\n" +
                              std::to_string(i) + "\r\n+n\r\n|1\r\n+k\r\n+v\r\n*2\r\n:1\r\n,2.5\r\n";
  REQUIRE(RespValueLength(value) == value.size());
  const std::string two = value + "$3\r\nabc\r\n";
  for (size_t step : {size_t{1}, size_t{3}, size_t{64}}) {
    RespScanner s;
    size_t n = 0, got = 0;
    while (got == 0 && n < two.size()) {
      n = std::min(two.size(), n + step);
      got = s.Scan(std::string_view(two).substr(0, n));
      if (n < value.size()) REQUIRE(got == 0);
    }
    CHECK(got == value.size());
    CHECK(s.Scan(std::string_view(two).substr(value.size())) == 9);  // it starts over
  }
  RespScanner bad;
  CHECK(bad.Scan("*2\r\n:1\r\n") == 0);
  CHECK(bad.Scan("*2\r\n:1\r\n$2\r\nabcd") == SIZE_MAX);
}
