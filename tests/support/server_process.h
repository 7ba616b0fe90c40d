// ServerProcess: starts the real featurekv-server binary on an ephemeral
// loopback port for integration tests (port from its "Ready" log line),
// and stops it with SIGTERM. Test-only; not thread-safe.
#pragma once

#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

namespace fkv::test {

class ServerProcess {
 public:
  explicit ServerProcess(std::vector<std::string> directives = {}) {
    const char* bin = std::getenv("FKV_SERVER");
    binary_ = bin ? bin : "./server/featurekv-server";
    char tmpl[] = "/tmp/fkv-test-XXXXXX";
    dir_ = mkdtemp(tmpl);
    log_ = dir_ + "/server.log";
    std::vector<std::string> args = {binary_, "--port", "0", "--logfile", log_, "--dir", dir_};
    args.insert(args.end(), directives.begin(), directives.end());
    pid_ = fork();
    if (pid_ == 0) {
      std::vector<char*> argv;
      for (auto& a : args) argv.push_back(a.data());
      argv.push_back(nullptr);
      execv(binary_.c_str(), argv.data());
      _exit(127);
    }
    auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    const std::string ready = "Ready to accept connections tcp ";
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream in(log_);
      std::string line;
      while (std::getline(in, line)) {
        size_t at = line.find(ready);
        size_t p = at == std::string::npos ? at : line.find(" port ", at);
        if (p != std::string::npos) {
          port_ = std::stoi(line.substr(p + 6));
          return;
        }
      }
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        throw std::runtime_error("server exited during start-up; log: " + log_);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    throw std::runtime_error("server did not become ready; log: " + log_);
  }
  ~ServerProcess() {
    if (pid_ > 0) {
      kill(pid_, SIGKILL);
      waitpid(pid_, nullptr, 0);
    }
    std::error_code ec;
    std::filesystem::remove_all(dir_, ec);
  }
  int port() const { return port_; }
  pid_t pid() const { return pid_; }
  const std::string& log_path() const { return log_; }
  // SIGTERM, then wait up to 10 s; returns the exit status (-1 on timeout).
  int Stop() {
    if (pid_ <= 0) return -1;
    kill(pid_, SIGTERM);
    return WaitExit(std::chrono::seconds(10));
  }
  int WaitExit(std::chrono::seconds limit) {
    auto deadline = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < deadline) {
      int st;
      if (waitpid(pid_, &st, WNOHANG) == pid_) {
        pid_ = -1;
        return WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
      }
      std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return -1;
  }

 private:
  std::string binary_, dir_, log_;
  pid_t pid_ = -1;
  int port_ = 0;
};

}  // namespace fkv::test
