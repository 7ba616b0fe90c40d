// The audit log (docs/operations.md, "Securing featurekv"): one JSON object
// a line for the security-relevant events (auth_failure, acl_change,
// config_set, registry_reload, flushall, shutdown, denied), appended to the
// `audit-log` file. Shards and the control thread only queue a line (one
// short lock); a writer thread of its own writes and flushes them, so a
// slow disk never stalls a command. Reopen() (SIGHUP) closes and reopens
// the file by name, for logrotate. Never holds a password: callers pass
// details already redacted (RedactRule, RedactConfig).
#pragma once

#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <deque>
#include <mutex>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

namespace fkv {

class AuditLog {
 public:
  AuditLog() = default;
  ~AuditLog();
  AuditLog(const AuditLog&) = delete;
  AuditLog& operator=(const AuditLog&) = delete;

  // Opens (appends to) the file and starts the writer; "" = off. Returns
  // "" or why the file cannot be opened.
  std::string Open(const std::string& path);
  bool on() const { return !path_.empty(); }
  // Queues one line: {"ts":..., "event":..., "client":..., "user":..., <details>}.
  // details: (name, value) pairs written as JSON strings.
  void Record(std::string_view event, std::string_view client, std::string_view user,
              const std::vector<std::pair<std::string, std::string>>& details = {});
  // Closes and reopens the file by name (log rotation); on the writer thread.
  void Reopen();
  // Writes everything queued so far (tests, shutdown).
  void Flush();
  uint64_t lines_written() const;

 private:
  void Loop();
  std::string path_;
  std::FILE* file_ = nullptr;  // the writer thread's
  mutable std::mutex mu_;
  std::condition_variable cv_, drained_;
  std::deque<std::string> queue_;
  bool stop_ = false, reopen_ = false, writing_ = false;
  uint64_t written_ = 0;
  std::thread thread_;
};

// An ACL rule as the audit log shows it: passwords and their hashes as "(redacted)".
std::string RedactRule(std::string_view rule);
// A CONFIG SET value as the audit log shows it (requirepass redacted).
std::string RedactConfig(std::string_view name, std::string_view value);
// JSON string escaping (quotes, backslashes, control characters, bytes >= 0x80 as \u00XX).
std::string JsonString(std::string_view s);

}  // namespace fkv
