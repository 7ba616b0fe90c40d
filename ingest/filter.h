// Filter: a `where:` expression of the registry, compiled once at registry
// load into a flat node array and evaluated per event against its slots.
// Language: == != < <= > >= , `in [..]`, `not in [..]`, and, or, not,
// parentheses; fields by name (dotted for nested); literals 'str', "str",
// numbers, true, false, null. Immutable after Compile: thread-safe.
#pragma once

#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "ingest/field_value.h"

namespace fkv {

class Filter {
 public:
  // slot_of(path) returns the slot index of a field path (allocating one).
  // On a syntax error returns nullptr and sets *error (with the position).
  static std::unique_ptr<Filter> Compile(std::string_view text, const std::function<int(const std::string&)>& slot_of,
                                         std::string* error);
  bool Eval(const FieldValue* slots) const { return EvalNode(root_, slots); }

  enum class Op : uint8_t { kAnd, kOr, kNot, kEq, kNe, kLt, kLe, kGt, kGe, kIn, kTruthy };
  struct Literal {
    ValueKind kind = ValueKind::kNull;
    bool b = false;
    int64_t i = 0;
    double d = 0;
    std::string s;
  };
  struct Node {
    Op op = Op::kTruthy;
    int a = -1, b = -1;  // children (and/or/not)
    int slot = -1;       // field (comparisons)
    std::vector<Literal> lits;  // one for comparisons, many for `in`
  };

 private:
  bool EvalNode(int n, const FieldValue* slots) const;
  std::vector<Node> nodes_;
  int root_ = -1;
  friend class FilterParser;
};

}  // namespace fkv
