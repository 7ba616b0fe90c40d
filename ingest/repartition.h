// Cluster mode's repartition records (docs/architecture.md, "Cluster mode"):
// a source message, as the node that consumed it from its source topic
// sends it to the repartition partition owning some of its entity keys, and
// the owner's de-duplication of what a failed-over producer sends twice.
#pragma once

#include <cstdint>
#include <map>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace fkv {

// One source message bound for one repartition partition. The owner plans
// it again (same registry, same `now_ms`: the same updates) and applies the
// updates whose keys are in that partition's slots.
struct RepartitionRecord {
  std::string_view source;  // the registry source's name
  std::string_view topic;   // the source message's topic, partition and offset
  int32_t partition = 0;
  int64_t offset = 0;
  int64_t now_ms = 0;       // the planning clock of the node that consumed it
  int64_t kafka_ts_ms = 0;  // the source message's timestamp (0: none)
  bool has_key = false, tombstone = false;
  std::string_view key;      // the source message's key (a table's entity id)
  std::string_view payload;  // the source message's value
  // A direct write (SET, HSET, FSET, ...) accepted by a node in cluster
  // mode: `payload` is its arguments (EncodeArgs), `source` is empty, and
  // `resp3` the protocol its reply is written in. The owner runs it as
  // the command, with `now_ms` as its clock.
  bool command = false, resp3 = false;
};

// Appends the record's bytes to *out (a version byte, then the fields).
void EncodeRepartition(const RepartitionRecord& r, std::string* out);
// Views into `bytes`; false when they are not a record of this version.
bool DecodeRepartition(std::string_view bytes, RepartitionRecord* r);

// A command's arguments as one payload, and back (views into `bytes`;
// false when they are not well formed or empty).
void EncodeArgs(std::span<const std::string_view> args, std::string* out);
bool DecodeArgs(std::string_view bytes, std::vector<std::string_view>* args);

// De-duplication of one repartition partition's records: per source
// (topic, partition), the offset after the newest message applied. A
// source partition's messages reach a repartition partition in offset
// order from its one consumer at a time; after a fail-over, the new
// consumer sends again from the group's committed offset, so whatever is
// below the mark has been applied and is dropped.
class DedupMarks {
 public:
  using Source = std::pair<std::string, int32_t>;
  // True (and the mark moves past it) when the message is new.
  bool Admit(std::string_view topic, int32_t partition, int64_t offset);
  const std::map<Source, int64_t>& marks() const { return marks_; }
  void Set(const std::string& topic, int32_t partition, int64_t next) { marks_[{topic, partition}] = next; }
  void Clear() { marks_.clear(); }

 private:
  std::map<Source, int64_t> marks_;
};

}  // namespace fkv
