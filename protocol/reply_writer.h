// ReplyWriter: appends RESP replies to a connection's output buffer, as RESP3
// types or their RESP2 forms depending on the protocol the client chose with
// HELLO. Used by every command family. Not thread-safe.
#pragma once

#include <cstdint>
#include <string>
#include <string_view>

namespace fkv {

class ReplyWriter {
 public:
  explicit ReplyWriter(std::string* out, int protocol = 2) : out_(out), proto_(protocol) {}

  int protocol() const { return proto_; }
  void set_protocol(int p) { proto_ = p; }
  std::string* buffer() { return out_; }

  void Simple(std::string_view s);      // +s
  void Ok() { out_->append("+OK\r\n", 5); }
  void Error(std::string_view msg);     // -msg  (msg carries its code: "ERR ...")
  uint64_t errors() const { return errors_; }  // error replies written so far (failed_calls)
  void Integer(int64_t v);              // :v
  void Bulk(std::string_view s);        // $len s
  void Null();                          // RESP3 _  | RESP2 $-1
  void NullArray();                     // RESP3 _  | RESP2 *-1
  void Array(size_t n);                 // *n
  void Map(size_t n);                   // RESP3 %n | RESP2 *2n (flat pairs)
  void Set(size_t n);                   // RESP3 ~n | RESP2 *n
  void Push(size_t n);                  // RESP3 >n | RESP2 *n
  void Double(double v);                // RESP3 ,v | RESP2 bulk string
  void Bool(bool v);                    // RESP3 #t | RESP2 :1
  void Verbatim(std::string_view s);    // RESP3 =len txt:s | RESP2 bulk
  void BigNumber(std::string_view digits);  // RESP3 (n | RESP2 bulk

 private:
  void Header(char type, uint64_t n);
  std::string* out_;
  int proto_;
  uint64_t errors_ = 0;
};

// Formats a double the way Redis replies with one: shortest text that reads
// back to the same value; "inf", "-inf", "nan".
std::string FormatDouble(double v);
// Formats a long double as INCRBYFLOAT does (%.17Lf, trailing zeros cut).
std::string FormatLongDouble(long double v);

}  // namespace fkv
