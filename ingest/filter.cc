// Filter: recursive-descent compiler and evaluator; see filter.h for the
// language. Comparison rules (docs/architecture.md "where filters"):
// numbers compare as numbers (integers exactly), strings bytewise, booleans
// by == and != only. A missing field or a value of another type makes ==
// false and != true, and the orderings false; `x == null` is true for a
// missing or null field.
#include "ingest/filter.h"

#include <cctype>
#include <charconv>
#include <cmath>
#include <cstdlib>

namespace fkv {

std::string FieldValue::Text() const {
  std::string t;
  AppendText(&t);
  return t;
}

void FieldValue::AppendText(std::string* out) const {
  char buf[64];
  switch (kind) {
    case ValueKind::kString: out->append(s); break;
    case ValueKind::kInt: out->append(buf, std::to_chars(buf, buf + sizeof buf, i).ptr); break;
    case ValueKind::kDouble: out->append(buf, std::to_chars(buf, buf + sizeof buf, d).ptr); break;
    case ValueKind::kBool: out->append(b ? "true" : "false"); break;
    default: break;
  }
}

class FilterParser {
 public:
  FilterParser(std::string_view t, const std::function<int(const std::string&)>& slot_of, Filter* f)
      : t_(t), slot_of_(slot_of), f_(f) {}

  bool Parse(std::string* err) {
    Next();
    int root = Or();
    if (root < 0 || !error_.empty()) {
      *err = error_.empty() ? "syntax error" : error_;
      return false;
    }
    if (tok_ != kEnd) {
      *err = "unexpected '" + std::string(text_) + "' at position " + std::to_string(tok_pos_ + 1);
      return false;
    }
    f_->root_ = root;
    return true;
  }

 private:
  enum Tok { kEnd, kIdent, kString, kNumber, kOp, kLParen, kRParen, kLBracket, kRBracket, kComma, kBad };

  void Next() {
    while (pos_ < t_.size() && std::isspace(static_cast<unsigned char>(t_[pos_]))) pos_++;
    tok_pos_ = pos_;
    if (pos_ >= t_.size()) {
      tok_ = kEnd;
      text_ = "end";
      return;
    }
    char c = t_[pos_];
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t b = pos_;
      while (pos_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[pos_])) || t_[pos_] == '_' || t_[pos_] == '.')) pos_++;
      tok_ = kIdent;
      text_ = std::string(t_.substr(b, pos_ - b));
      return;
    }
    if (c == '\'' || c == '"') {
      char q = c;
      pos_++;
      std::string s;
      while (pos_ < t_.size() && t_[pos_] != q) {
        if (t_[pos_] == '\\' && pos_ + 1 < t_.size()) pos_++;
        s += t_[pos_++];
      }
      if (pos_ >= t_.size()) {
        tok_ = kBad;
        text_ = "unterminated string";
        return;
      }
      pos_++;
      tok_ = kString;
      text_ = s;
      return;
    }
    if (std::isdigit(static_cast<unsigned char>(c)) || ((c == '-' || c == '.') && pos_ + 1 < t_.size() &&
                                                        (std::isdigit(static_cast<unsigned char>(t_[pos_ + 1])) || t_[pos_ + 1] == '.'))) {
      size_t b = pos_++;
      while (pos_ < t_.size() && (std::isalnum(static_cast<unsigned char>(t_[pos_])) || t_[pos_] == '.' ||
                                  ((t_[pos_] == '-' || t_[pos_] == '+') && (t_[pos_ - 1] == 'e' || t_[pos_ - 1] == 'E'))))
        pos_++;
      tok_ = kNumber;
      text_ = std::string(t_.substr(b, pos_ - b));
      return;
    }
    static const char* ops[] = {"==", "!=", "<=", ">=", "<", ">"};
    for (const char* op : ops) {
      size_t n = std::char_traits<char>::length(op);
      if (t_.substr(pos_, n) == op) {
        pos_ += n;
        tok_ = kOp;
        text_ = op;
        return;
      }
    }
    pos_++;
    text_ = std::string(1, c);
    switch (c) {
      case '(': tok_ = kLParen; return;
      case ')': tok_ = kRParen; return;
      case '[': tok_ = kLBracket; return;
      case ']': tok_ = kRBracket; return;
      case ',': tok_ = kComma; return;
      default: tok_ = kBad; return;
    }
  }

  bool IsKeyword(const char* kw) const {
    if (tok_ != kIdent || text_.size() != std::char_traits<char>::length(kw)) return false;
    for (size_t i = 0; i < text_.size(); i++)
      if (std::tolower(static_cast<unsigned char>(text_[i])) != kw[i]) return false;
    return true;
  }

  int Fail(const std::string& what) {
    if (error_.empty()) error_ = what + " at position " + std::to_string(tok_pos_ + 1);
    return -1;
  }

  int Add(Filter::Node n) {
    f_->nodes_.push_back(std::move(n));
    return static_cast<int>(f_->nodes_.size() - 1);
  }

  int Or() {
    int l = And();
    while (l >= 0 && IsKeyword("or")) {
      Next();
      int r = And();
      if (r < 0) return -1;
      Filter::Node n;
      n.op = Filter::Op::kOr;
      n.a = l;
      n.b = r;
      l = Add(std::move(n));
    }
    return l;
  }

  int And() {
    int l = Not();
    while (l >= 0 && IsKeyword("and")) {
      Next();
      int r = Not();
      if (r < 0) return -1;
      Filter::Node n;
      n.op = Filter::Op::kAnd;
      n.a = l;
      n.b = r;
      l = Add(std::move(n));
    }
    return l;
  }

  int Not() {
    if (IsKeyword("not")) {
      Next();
      int a = Not();
      if (a < 0) return -1;
      Filter::Node n;
      n.op = Filter::Op::kNot;
      n.a = a;
      return Add(std::move(n));
    }
    return Primary();
  }

  bool ParseLiteral(Filter::Literal* lit) {
    if (tok_ == kString) {
      lit->kind = ValueKind::kString;
      lit->s = text_;
    } else if (tok_ == kNumber) {
      int64_t iv;
      auto r = std::from_chars(text_.data(), text_.data() + text_.size(), iv);
      if (r.ec == std::errc() && r.ptr == text_.data() + text_.size()) {
        lit->kind = ValueKind::kInt;
        lit->i = iv;
      } else {
        char* end = nullptr;
        double dv = std::strtod(text_.c_str(), &end);
        if (end != text_.c_str() + text_.size() || !std::isfinite(dv)) return Fail("bad number '" + text_ + "'"), false;
        lit->kind = ValueKind::kDouble;
        lit->d = dv;
      }
    } else if (IsKeyword("true") || IsKeyword("false")) {
      lit->kind = ValueKind::kBool;
      lit->b = IsKeyword("true");
    } else if (IsKeyword("null")) {
      lit->kind = ValueKind::kNull;
    } else {
      Fail("expected a value (string, number, true, false, null), got '" + text_ + "'");
      return false;
    }
    Next();
    return true;
  }

  int Primary() {
    if (tok_ == kLParen) {
      Next();
      int e = Or();
      if (e < 0) return -1;
      if (tok_ != kRParen) return Fail("expected ')'");
      Next();
      return e;
    }
    if (tok_ == kBad) return Fail(text_ == "unterminated string" ? text_ : "unexpected '" + text_ + "'");
    if (tok_ != kIdent || IsKeyword("and") || IsKeyword("or") || IsKeyword("in") || IsKeyword("true") ||
        IsKeyword("false") || IsKeyword("null"))
      return Fail("expected a field name, got '" + text_ + "'");
    std::string field = text_;
    if (field.front() == '.' || field.back() == '.' || field.find("..") != std::string::npos)
      return Fail("bad field path '" + field + "'");
    int slot = slot_of_(field);
    Next();
    Filter::Node n;
      n.op = Filter::Op::kTruthy;
    n.slot = slot;
    bool negate_in = false;
    if (IsKeyword("not")) {
      Next();
      if (!IsKeyword("in")) return Fail("expected 'in' after 'not'");
      negate_in = true;
    }
    if (IsKeyword("in")) {
      Next();
      if (tok_ != kLBracket) return Fail("expected '[' after 'in'");
      Next();
      n.op = Filter::Op::kIn;
      while (tok_ != kRBracket) {
        Filter::Literal lit;
        if (!ParseLiteral(&lit)) return -1;
        n.lits.push_back(std::move(lit));
        if (tok_ == kComma) Next();
        else if (tok_ != kRBracket) return Fail("expected ',' or ']'");
      }
      Next();
      int id = Add(std::move(n));
      if (!negate_in) return id;
      Filter::Node neg;
      neg.op = Filter::Op::kNot;
      neg.a = id;
      return Add(std::move(neg));
    }
    if (tok_ == kOp) {
      std::string op = text_;
      Next();
      Filter::Literal lit;
      if (!ParseLiteral(&lit)) return -1;
      n.op = op == "==" ? Filter::Op::kEq : op == "!=" ? Filter::Op::kNe : op == "<" ? Filter::Op::kLt
             : op == "<=" ? Filter::Op::kLe : op == ">" ? Filter::Op::kGt : Filter::Op::kGe;
      if (lit.kind == ValueKind::kNull && n.op != Filter::Op::kEq && n.op != Filter::Op::kNe)
        return Fail("null can only be compared with == or !=");
      n.lits.push_back(std::move(lit));
    }
    return Add(std::move(n));
  }

  std::string_view t_;
  const std::function<int(const std::string&)>& slot_of_;
  Filter* f_;
  size_t pos_ = 0, tok_pos_ = 0;
  Tok tok_ = kEnd;
  std::string text_;
  std::string error_;
};

std::unique_ptr<Filter> Filter::Compile(std::string_view text, const std::function<int(const std::string&)>& slot_of,
                                        std::string* error) {
  auto f = std::make_unique<Filter>();
  FilterParser p(text, slot_of, f.get());
  if (!p.Parse(error)) return nullptr;
  return f;
}

namespace {
// -1 less, 0 equal, 1 greater, 2 incomparable
int Compare(const FieldValue& v, const Filter::Literal& l) {
  if (v.kind == ValueKind::kInt && l.kind == ValueKind::kInt) return v.i < l.i ? -1 : v.i > l.i ? 1 : 0;
  if (v.is_number() && (l.kind == ValueKind::kInt || l.kind == ValueKind::kDouble)) {
    double a = v.as_double(), b = l.kind == ValueKind::kInt ? static_cast<double>(l.i) : l.d;
    return a < b ? -1 : a > b ? 1 : 0;
  }
  if (v.kind == ValueKind::kString && l.kind == ValueKind::kString) {
    int c = v.s.compare(l.s);
    return c < 0 ? -1 : c > 0 ? 1 : 0;
  }
  if (v.kind == ValueKind::kBool && l.kind == ValueKind::kBool) return v.b == l.b ? 0 : 3;  // 3: unequal, unordered
  return 2;
}

bool Equal(const FieldValue& v, const Filter::Literal& l) {
  if (l.kind == ValueKind::kNull) return v.kind == ValueKind::kNull || v.kind == ValueKind::kMissing;
  return Compare(v, l) == 0;
}
}  // namespace

bool Filter::EvalNode(int n, const FieldValue* slots) const {
  const Node& node = nodes_[static_cast<size_t>(n)];
  switch (node.op) {
    case Op::kAnd: return EvalNode(node.a, slots) && EvalNode(node.b, slots);
    case Op::kOr: return EvalNode(node.a, slots) || EvalNode(node.b, slots);
    case Op::kNot: return !EvalNode(node.a, slots);
    case Op::kTruthy: {
      const FieldValue& v = slots[node.slot];
      return v.kind == ValueKind::kBool && v.b;
    }
    case Op::kIn: {
      const FieldValue& v = slots[node.slot];
      for (const Literal& l : node.lits)
        if (Equal(v, l)) return true;
      return false;
    }
    case Op::kEq: return Equal(slots[node.slot], node.lits[0]);
    case Op::kNe: return !Equal(slots[node.slot], node.lits[0]);
    default: {
      int c = Compare(slots[node.slot], node.lits[0]);
      if (c == 2 || c == 3) return false;
      switch (node.op) {
        case Op::kLt: return c < 0;
        case Op::kLe: return c <= 0;
        case Op::kGt: return c > 0;
        case Op::kGe: return c >= 0;
        default: return false;
      }
    }
  }
}

}  // namespace fkv
