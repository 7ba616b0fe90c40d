// ShardPlan (storage/shard_plan.h): every key lands in exactly one shard's
// list, the one ShardOfHash names, in the order given.
#include <doctest/doctest.h>

#include <string>
#include <vector>

#include "storage/shard_plan.h"

using fkv::HashKey;
using fkv::ShardOfHash;
using fkv::ShardPlan;

TEST_CASE("a shard plan groups every key under the shard that owns it") {
  for (int nshards : {1, 2, 4, 7, 256}) {
    std::vector<std::string> keys;
    for (int i = 0; i < 1000; i++) keys.push_back("key:" + std::to_string(i % 900));  // some named twice
    ShardPlan plan = ShardPlan::Build(nshards, keys.size(), [&](size_t i) { return std::string_view(keys[i]); });
    CHECK(plan.size() == keys.size());
    std::vector<int> seen(keys.size(), 0);
    int prev_shard = -1;
    for (int s : plan.shards()) {
      CHECK(s > prev_shard);
      prev_shard = s;
      auto idx = plan.indexes(s);
      CHECK(!idx.empty());
      for (size_t j = 0; j < idx.size(); j++) {
        if (j > 0) CHECK(idx[j] > idx[j - 1]);
        CHECK(plan.hash(idx[j]) == HashKey(keys[idx[j]]));
        CHECK(ShardOfHash(plan.hash(idx[j]), nshards) == s);
        seen[idx[j]]++;
      }
    }
    for (int n : seen) CHECK(n == 1);
    if (nshards <= 4) CHECK(plan.shards().size() == static_cast<size_t>(nshards));
  }
  ShardPlan empty = ShardPlan::Build(4, 0, [](size_t) { return std::string_view(); });
  CHECK(empty.shards().empty());
  CHECK(empty.indexes(2).empty());
}
