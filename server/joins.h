// Join lookups of the server (docs/architecture.md, "Joins"): the resolvers
// the event planner asks for the current values of joined features.
//
// - StoreJoins reads the joined entity straight from its shard's store:
//   for FEVENT, which runs with one shard, or with every shard parked
//   (ExclusiveRunner), and for a Kafka batch's lookups on each shard.
// - EnrichEvent writes what a StoreJoins returned for one event into the
//   event's JSON, under the key "\u0001join", for the append-only file;
//   EmbeddedJoins reads them back when the file is replayed, so a replay
//   enriches each event as it was enriched when it was acknowledged, in
//   whatever order the shards' files replay.
#pragma once

#include <simdjson.h>

#include <deque>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/event_path.h"
#include "ingest/registry.h"

namespace fkv {

class ShardSet;

class StoreJoins : public JoinResolver {
 public:
  StoreJoins(ShardSet& set, const Registry& reg, int64_t now_ms) : set_(set), reg_(reg), now_(now_ms) {}
  void BeginEvent() override;
  const JoinValues& Lookup(const ViewDef& v, const JoinDef& j, std::string_view key) override;
  // The event's JSON with this event's lookups embedded (the event as it
  // was when nothing was looked up).
  std::string EnrichEvent(std::string_view json) const;

 private:
  static std::string JsonText(std::string_view s);  // escaped for a JSON string (names: valid UTF-8)
  struct Done {
    const ViewDef* view;
    const JoinDef* join;
    JoinValues values;
  };
  ShardSet& set_;
  const Registry& reg_;
  int64_t now_;
  std::deque<Done> done_;  // this event's lookups (stable addresses)
};

class EmbeddedJoins : public JoinResolver {
 public:
  // The event about to be planned: its embedded lookups are read.
  void SetEvent(std::string_view json);
  const JoinValues& Lookup(const ViewDef& v, const JoinDef& j, std::string_view key) override;

 private:
  simdjson::dom::parser parser_;
  simdjson::dom::object joins_;
  bool has_ = false;
  std::deque<JoinValues> out_;
};

}  // namespace fkv
