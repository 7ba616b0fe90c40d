// Unit tests of protocol/reply_writer: each RESP3 type and its RESP2 form,
// decoded back with the test decoder.
#include <doctest/doctest.h>

#include <cmath>
#include <limits>

#include "protocol/reply_writer.h"
#include "tests/support/resp_decode.h"

using namespace fkv;
using fkv::test::DecodeOne;

TEST_CASE("scalar replies are the same in RESP2 and RESP3") {
  for (int proto : {2, 3}) {
    std::string b;
    ReplyWriter w(&b, proto);
    w.Simple("OK");
    CHECK(b == "+OK\r\n");
    b.clear();
    w.Error("ERR bad\r\nthing");
    CHECK(b == "-ERR bad  thing\r\n");  // one line, always
    b.clear();
    w.Integer(-42);
    CHECK(b == ":-42\r\n");
    b.clear();
    w.Integer(std::numeric_limits<int64_t>::min());
    CHECK(b == ":-9223372036854775808\r\n");
    b.clear();
    w.Bulk(std::string("a\0b", 3));
    CHECK(b == std::string("$3\r\na\0b\r\n", 9));
    b.clear();
    w.Array(2);
    CHECK(b == "*2\r\n");
  }
}

TEST_CASE("RESP3 types and their RESP2 forms") {
  std::string b3, b2;
  ReplyWriter w3(&b3, 3), w2(&b2, 2);
  for (ReplyWriter* w : {&w3, &w2}) {
    w->Null();
    w->NullArray();
    w->Map(1);
    w->Bulk("k");
    w->Double(1.5);
    w->Set(2);
    w->Bool(true);
    w->Bool(false);
    w->Push(1);
    w->Verbatim("text");
    w->BigNumber("12345678901234567890");
  }
  CHECK(b3 == "_\r\n_\r\n%1\r\n$1\r\nk\r\n,1.5\r\n~2\r\n#t\r\n#f\r\n>1\r\n=8\r\ntxt:text\r\n(12345678901234567890\r\n");
  CHECK(b2 == "$-1\r\n*-1\r\n*2\r\n$1\r\nk\r\n$3\r\n1.5\r\n*2\r\n:1\r\n:0\r\n*1\r\n$4\r\ntext\r\n$20\r\n12345678901234567890\r\n");
}

TEST_CASE("a nested map decodes to the same tree in both protocols") {
  for (int proto : {2, 3}) {
    std::string b;
    ReplyWriter w(&b, proto);
    w.Map(2);
    w.Bulk("a");
    w.Integer(1);
    w.Bulk("b");
    w.Array(2);
    w.Double(0.25);
    w.Null();
    auto v = DecodeOne(b);
    REQUIRE(v.type == (proto == 3 ? '%' : '*'));
    REQUIRE(v.elems.size() == 4);
    CHECK(v.elems[0].str == "a");
    CHECK(v.elems[1].integer == 1);
    CHECK(v.elems[3].elems.size() == 2);
    CHECK(v.elems[3].elems[0].str == "0.25");
    CHECK(v.elems[3].elems[1].null);
  }
}

TEST_CASE("doubles print the shortest text that reads back exactly") {
  CHECK(FormatDouble(0.1) == "0.1");
  CHECK(FormatDouble(1e300) == "1e+300");
  CHECK(FormatDouble(-2.5) == "-2.5");
  CHECK(FormatDouble(std::numeric_limits<double>::infinity()) == "inf");
  CHECK(FormatDouble(-std::numeric_limits<double>::infinity()) == "-inf");
  CHECK(FormatDouble(std::nan("")) == "nan");
  double x = 0.1 + 0.2;
  CHECK(std::stod(FormatDouble(x)) == x);
}

TEST_CASE("INCRBYFLOAT formatting follows Redis (17 digits, zeros trimmed)") {
  CHECK(FormatLongDouble(10.5L) == "10.5");
  CHECK(FormatLongDouble(3.0L) == "3");
  CHECK(FormatLongDouble(0.1L + 0.2L) == "0.3");
  CHECK(FormatLongDouble(-0.0L) == "0");
  CHECK(FormatLongDouble(5.0e3L) == "5000");
}
