// Unit tests of storage/: records, the key table, expiry (lazy and active)
// and SCAN's guarantee across resizes.
#include <doctest/doctest.h>

#include <random>
#include <set>
#include <string>

#include "storage/key_table.h"
#include "storage/shard_store.h"

using namespace fkv;

namespace {
std::string Key(int i) { return "key:" + std::to_string(i); }

std::set<std::string> ScanAll(ShardStore& s, int64_t now) {
  std::set<std::string> keys;
  uint64_t cur = 0;
  int steps = 0;
  do {
    cur = s.Scan(cur, now, [&](Record* r) { keys.insert(std::string(r->key())); });
  } while (cur != 0 && ++steps < 10'000'000);
  return keys;
}
}  // namespace

TEST_CASE("strings: put, overwrite in place and with another size, erase") {
  ShardStore s;
  std::string k = "user:1";
  uint64_t h = HashKey(k);
  CHECK(s.Find(k, h, 0) == nullptr);
  s.PutString(k, h, "abc", 0);
  REQUIRE(s.Find(k, h, 0) != nullptr);
  CHECK(s.Find(k, h, 0)->string_value() == "abc");
  s.PutString(k, h, "xyz", 0);
  CHECK(s.Find(k, h, 0)->string_value() == "xyz");
  s.PutString(k, h, std::string(1000, 'q'), 0);
  CHECK(s.Find(k, h, 0)->string_value() == std::string(1000, 'q'));
  s.PutString(k, h, "", 0);
  CHECK(s.Find(k, h, 0)->string_value().empty());
  CHECK(s.size() == 1);
  CHECK(s.Erase(k, h, 0));
  CHECK_FALSE(s.Erase(k, h, 0));
  CHECK(s.size() == 0);
}

TEST_CASE("many keys survive growth and shrink") {
  ShardStore s;
  const int n = 100'000;
  for (int i = 0; i < n; i++) s.PutString(Key(i), HashKey(Key(i)), std::to_string(i), 0);
  CHECK(s.size() == n);
  for (int i = 0; i < n; i += 7) {
    Record* r = s.Find(Key(i), HashKey(Key(i)), 0);
    REQUIRE(r != nullptr);
    CHECK(r->string_value() == std::to_string(i));
  }
  for (int i = 0; i < n - 10; i++) REQUIRE(s.Erase(Key(i), HashKey(Key(i)), 0));
  CHECK(s.size() == 10);
  CHECK_FALSE(s.Rehash(1'000'000));  // the incremental shrink finishes
  CHECK(s.bucket_count() < 1024);  // shrank
  for (int i = n - 10; i < n; i++) CHECK(s.Find(Key(i), HashKey(Key(i)), 0) != nullptr);
}

TEST_CASE("hashes: create, set, overwrite, delete, convert past the flat limit") {
  ShardStore s;
  uint64_t h = HashKey("h");
  HashValue* hv = s.GetOrCreateHash("h", h, 0);
  REQUIRE(hv != nullptr);
  CHECK(hv->Set("f", "1"));
  CHECK_FALSE(hv->Set("f", "2"));
  CHECK(*hv->Get("f") == "2");
  for (int i = 0; i < 200; i++) hv->Set("f" + std::to_string(i), std::to_string(i));
  CHECK(hv->size() == 201);
  CHECK(*hv->Get("f150") == "150");
  CHECK(hv->Del("f150"));
  CHECK_FALSE(hv->Del("f150"));
  CHECK(hv->Get("f150") == nullptr);
  s.PutString("str", HashKey("str"), "v", 0);
  CHECK(s.GetOrCreateHash("str", HashKey("str"), 0) == nullptr);  // WRONGTYPE
}

TEST_CASE("lazy expiry: an expired key is gone on access and counted") {
  ShardStore s;
  uint64_t h = HashKey("k");
  s.PutString("k", h, "v", 1000);
  CHECK(s.expires_count() == 1);
  CHECK(s.Find("k", h, 999) != nullptr);
  CHECK(s.Find("k", h, 1000) == nullptr);
  CHECK(s.size() == 0);
  CHECK(s.expires_count() == 0);
  CHECK(s.stats().expired_keys == 1);
}

TEST_CASE("SetExpire adds, changes and removes the expiry; the past deletes") {
  ShardStore s;
  uint64_t h = HashKey("k");
  s.PutString("k", h, "value", 0);
  CHECK(s.SetExpire("k", h, 5000, 100));
  CHECK(s.Find("k", h, 100)->expire_at() == 5000);
  CHECK(s.Find("k", h, 100)->string_value() == "value");
  CHECK(s.SetExpire("k", h, 6000, 100));
  CHECK(s.Find("k", h, 100)->expire_at() == 6000);
  CHECK(s.SetExpire("k", h, 0, 100));  // persist
  CHECK_FALSE(s.Find("k", h, 100)->has_expiry());
  CHECK(s.expires_count() == 0);
  HashValue* hv = s.GetOrCreateHash("hh", HashKey("hh"), 0);
  hv->Set("a", "b");
  CHECK(s.SetExpire("hh", HashKey("hh"), 9000, 100));  // objects move with the record
  CHECK(*s.Find("hh", HashKey("hh"), 100)->hash_value()->Get("a") == "b");
  CHECK(s.SetExpire("k", h, 50, 100));  // in the past: deleted
  CHECK(s.Find("k", h, 100) == nullptr);
  CHECK_FALSE(s.SetExpire("missing", HashKey("missing"), 5000, 100));
}

TEST_CASE("active sweep reclaims expired keys without any read") {
  ShardStore s;
  for (int i = 0; i < 10'000; i++) s.PutString(Key(i), HashKey(Key(i)), "v", i % 2 ? 500 : 0);
  CHECK(s.size() == 10'000);
  size_t removed = 0;
  for (int pass = 0; pass < 100 && s.expires_count() > 0; pass++) removed += s.SweepExpired(1000, 1024);
  CHECK(removed == 5000);
  CHECK(s.size() == 5000);
  CHECK(s.expires_count() == 0);
  // with nothing due, the sweep removes nothing
  s.PutString("late", HashKey("late"), "v", 5000);
  CHECK(s.SweepExpired(1000, 1'000'000) == 0);
  CHECK(s.size() == 5001);
}

TEST_CASE("SCAN returns every key exactly once on a stable table") {
  ShardStore s;
  for (int i = 0; i < 5000; i++) s.PutString(Key(i), HashKey(Key(i)), "v", 0);
  auto keys = ScanAll(s, 0);
  CHECK(keys.size() == 5000);
}

TEST_CASE("SCAN returns every key present throughout, across growth and shrink") {
  for (int mode = 0; mode < 2; mode++) {
    ShardStore s;
    std::set<std::string> stable;
    for (int i = 0; i < 3000; i++) {
      s.PutString(Key(i), HashKey(Key(i)), "v", 0);
      if (mode == 1 || i < 1000) stable.insert(Key(i));
    }
    if (mode == 1) stable.clear();
    std::set<std::string> seen;
    uint64_t cur = 0;
    int step = 0;
    int next = 3000;
    do {
      cur = s.Scan(cur, 0, [&](Record* r) { seen.insert(std::string(r->key())); });
      // mutate between calls: mode 0 grows the table, mode 1 shrinks it
      for (int j = 0; j < 50; j++) {
        if (mode == 0 && step < 300) {  // grows 3000 -> 18000 keys: several doublings
          s.PutString(Key(next), HashKey(Key(next)), "v", 0);
          next++;
        } else if (step * 50 + j < 2900) {
          std::string k = Key(100 + step * 50 + j);
          s.Erase(k, HashKey(k), 0);
        }
      }
      step++;
    } while (cur != 0 && step < 100000);
    if (mode == 1)
      for (int i = 0; i < 100; i++) stable.insert(Key(i));
    for (const auto& k : stable) {
      INFO("mode " << mode << " key " << k);
      CHECK(seen.count(k) == 1);
    }
  }
}

TEST_CASE("SCAN skips expired keys") {
  ShardStore s;
  s.PutString("a", HashKey("a"), "v", 100);
  s.PutString("b", HashKey("b"), "v", 0);
  auto keys = ScanAll(s, 200);
  CHECK(keys == std::set<std::string>{"b"});
}


TEST_CASE("an incremental resize keeps every key findable, scannable and sweepable while both tables exist") {
  KeyTable t;
  const int n = 40'000;
  auto find_all = [&](int upto) {
    int found = 0;
    for (int i = 0; i < upto; i++) found += t.Find(Key(i), HashKey(Key(i))) != nullptr;
    return found;
  };
  auto scan_all = [&]() {
    std::set<std::string> keys;
    uint64_t cur = 0;
    do {
      cur = t.Scan(cur, [&](Record* r) { keys.insert(std::string(r->key())); });
    } while (cur != 0);
    return keys;
  };
  int inserted = 0, checked_mid_rehash = 0;
  while (inserted < n) {
    std::string k = Key(inserted);
    t.Insert(Record::NewString(k, "v", 0), HashKey(k));
    inserted++;
    if (t.rehashing() && inserted > 1000 && checked_mid_rehash < 3 && inserted % 97 == 0) {
      // Scan and Random do not move buckets: the rehash is still half done.
      CHECK(scan_all().size() == static_cast<size_t>(inserted));
      std::mt19937_64 rng(inserted);
      CHECK(t.Random([&] { return rng(); }) != nullptr);
      CHECK(t.rehashing());
      CHECK(find_all(inserted) == inserted);  // lookups move buckets as they go
      checked_mid_rehash++;
    }
  }
  CHECK(checked_mid_rehash == 3);
  CHECK_FALSE(t.RehashFor(1'000'000));  // the cron finishes what is left
  CHECK_FALSE(t.rehashing());
  CHECK(t.bucket_count() >= static_cast<size_t>(n));
  CHECK(find_all(n) == n);

  // Shrink: remove all but 100, then the table starts a smaller one.
  for (int i = 100; i < n; i++) Record::Free(t.RemoveAt(t.FindLink(Key(i), HashKey(Key(i)))));
  t.MaybeShrink();
  REQUIRE(t.rehashing());
  CHECK(scan_all().size() == 100);
  size_t swept = 0;
  for (size_t b = 0; b < t.bucket_count(); b++) swept += t.SweepBucket(b, [](Record*) { return true; });
  CHECK(swept == 100);  // the old table's buckets are swept with the new one's
  CHECK(t.size() == 0);
  CHECK(scan_all().empty());
  CHECK_FALSE(t.RehashFor(1'000'000));
  CHECK(t.bucket_count() < 1024);  // shrank
}
