// The audit log: see audit.h.
#include "server/audit.h"

#include <cctype>
#include <cerrno>
#include <cstring>
#include <chrono>
#include <ctime>

#include <spdlog/spdlog.h>

namespace fkv {

AuditLog::~AuditLog() {
  {
    std::lock_guard lk(mu_);
    stop_ = true;
  }
  cv_.notify_all();
  if (thread_.joinable()) thread_.join();
  if (file_ != nullptr) std::fclose(file_);
}

std::string AuditLog::Open(const std::string& path) {
  if (path.empty()) return "";
  file_ = std::fopen(path.c_str(), "a");
  if (file_ == nullptr) return "cannot open audit-log '" + path + "': " + std::strerror(errno);
  path_ = path;
  thread_ = std::thread([this] { Loop(); });
  return "";
}

namespace {
std::string IsoNow() {
  auto now = std::chrono::system_clock::now();
  auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(now.time_since_epoch()).count();
  std::time_t secs = static_cast<std::time_t>(ms / 1000);
  std::tm tm{};
  gmtime_r(&secs, &tm);
  char buf[40];
  size_t n = std::strftime(buf, sizeof(buf), "%Y-%m-%dT%H:%M:%S", &tm);
  std::snprintf(buf + n, sizeof(buf) - n, ".%03dZ", static_cast<int>(ms % 1000));
  return buf;
}
}  // namespace

std::string JsonString(std::string_view s) {
  std::string out = "\"";
  for (unsigned char ch : s) {
    if (ch == '"' || ch == '\\') {
      out += '\\';
      out += static_cast<char>(ch);
    } else if (ch < 0x20 || ch >= 0x7f) {
      char buf[8];
      std::snprintf(buf, sizeof(buf), "\\u%04x", ch);
      out += buf;
    } else {
      out += static_cast<char>(ch);
    }
  }
  return out + "\"";
}

void AuditLog::Record(std::string_view event, std::string_view client, std::string_view user,
                      const std::vector<std::pair<std::string, std::string>>& details) {
  if (!on()) return;
  std::string line = "{\"ts\":" + JsonString(IsoNow()) + ",\"event\":" + JsonString(event) +
                     ",\"client\":" + JsonString(client) + ",\"user\":" + JsonString(user);
  for (const auto& [k, v] : details) line += "," + JsonString(k) + ":" + JsonString(v);
  line += "}\n";
  {
    std::lock_guard lk(mu_);
    queue_.push_back(std::move(line));
  }
  cv_.notify_one();
}

void AuditLog::Reopen() {
  if (!on()) return;
  {
    std::lock_guard lk(mu_);
    reopen_ = true;
  }
  cv_.notify_one();
}

void AuditLog::Flush() {
  if (!on()) return;
  std::unique_lock lk(mu_);
  cv_.notify_one();
  drained_.wait(lk, [&] { return (queue_.empty() && !writing_ && !reopen_) || stop_; });
}

uint64_t AuditLog::lines_written() const {
  std::lock_guard lk(mu_);
  return written_;
}

void AuditLog::Loop() {
  std::unique_lock lk(mu_);
  for (;;) {
    cv_.wait(lk, [&] { return stop_ || reopen_ || !queue_.empty(); });
    if (reopen_) {
      reopen_ = false;
      lk.unlock();
      std::FILE* f = std::fopen(path_.c_str(), "a");
      if (f == nullptr) {
        spdlog::warn("audit-log: cannot reopen '{}': {} (still writing the old file)", path_, std::strerror(errno));
      } else {
        std::fclose(file_);
        file_ = f;
      }
      lk.lock();
    }
    std::deque<std::string> batch;
    batch.swap(queue_);
    writing_ = !batch.empty();
    lk.unlock();
    for (const auto& line : batch)
      if (std::fwrite(line.data(), 1, line.size(), file_) != line.size())
        spdlog::warn("audit-log: write to '{}' failed: {}", path_, std::strerror(errno));
    if (!batch.empty()) std::fflush(file_);
    lk.lock();
    written_ += batch.size();
    writing_ = false;
    drained_.notify_all();
    if (stop_ && queue_.empty()) return;
  }
}

std::string RedactRule(std::string_view rule) {
  if (!rule.empty() && (rule[0] == '>' || rule[0] == '<' || rule[0] == '#' || rule[0] == '!'))
    return std::string(1, rule[0]) + "(redacted)";
  return std::string(rule);
}

std::string RedactConfig(std::string_view name, std::string_view value) {
  std::string l(name);
  for (char& ch : l) ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
  if (l == "requirepass" || l == "masterauth" || l.find("pass") != std::string::npos) return "(redacted)";
  return std::string(value);
}

}  // namespace fkv
