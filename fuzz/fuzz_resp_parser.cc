// libFuzzer target: the RESP request parser. The input is fed in pieces
// whose sizes come from the input itself, as a client's reads would split
// it; the parser must never crash, and every byte of a complete request's
// arguments must be readable (ASan checks each one).
#include <cstddef>
#include <cstdint>
#include <string>

#include "protocol/resp_parser.h"

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  if (size == 0) return 0;
  fkv::ParserLimits limits;
  limits.max_bulk_len = 1 << 16;  // small limits: the limit paths get exercised too
  limits.max_args = 1024;
  limits.max_inline = 4096;
  fkv::RequestParser parser(limits);
  size_t step = 1 + data[0] % 17;  // how the bytes arrive
  std::string buf;
  size_t fed = 1;
  while (fed < size || !buf.empty()) {
    size_t n = std::min(step, size - fed);
    buf.append(reinterpret_cast<const char*>(data) + fed, n);
    fed += n;
    fkv::ArgList args;
    size_t consumed = 0;
    fkv::ParseStatus st = parser.Parse(buf, &args, &consumed);
    if (st == fkv::ParseStatus::kError) return 0;  // the server answers and closes
    if (st == fkv::ParseStatus::kNeedMore) {
      if (n == 0) return 0;  // no more input
      continue;
    }
    if (consumed == 0 || consumed > buf.size()) __builtin_trap();
    unsigned sum = 0;
    for (std::string_view a : args)
      for (char ch : a) sum += static_cast<unsigned char>(ch);
    volatile unsigned sink = sum;
    (void)sink;
    buf.erase(0, consumed);
  }
  return 0;
}
