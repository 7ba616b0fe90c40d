// FieldValue: one scalar extracted from a decoded JSON event (a "slot"),
// as used by the where-filters and the aggregation plans. Strings point into
// the decoder's buffer: valid until the next event is decoded.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fkv {

enum class ValueKind : uint8_t { kMissing, kNull, kBool, kInt, kDouble, kString, kOther };

struct FieldValue {
  ValueKind kind = ValueKind::kMissing;
  bool b = false;
  int64_t i = 0;
  double d = 0;
  std::string_view s;

  bool is_number() const { return kind == ValueKind::kInt || kind == ValueKind::kDouble; }
  double as_double() const { return kind == ValueKind::kInt ? static_cast<double>(i) : d; }
  // A scalar usable as an entity key, a distinct value or a `last` value.
  bool is_scalar() const { return kind == ValueKind::kString || is_number() || kind == ValueKind::kBool; }
  // Canonical text: strings as they are, numbers in shortest form.
  std::string Text() const;
  // The same text appended to *out (no temporary string).
  void AppendText(std::string* out) const;
};

}  // namespace fkv
