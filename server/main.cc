// featurekv-server [conf-file] [--directive value ...]: loads the config,
// sets up logging, starts the server and waits for SHUTDOWN or SIGTERM.
#include <signal.h>
#include <spdlog/sinks/basic_file_sink.h>
#include <spdlog/sinks/stdout_sinks.h>
#include <spdlog/spdlog.h>

#include <cstdio>
#include <iostream>

#include "server/command.h"
#include "server/server.h"

namespace {
spdlog::level::level_enum LogLevel(const std::string& l) {
  if (l == "debug") return spdlog::level::debug;
  if (l == "verbose") return spdlog::level::debug;
  if (l == "warning") return spdlog::level::warn;
  return spdlog::level::info;
}
}  // namespace

int main(int argc, char** argv) {
  using namespace fkv;
  signal(SIGPIPE, SIG_IGN);
  signal(SIGXFSZ, SIG_IGN);  // a file size limit fails the snapshot write (EFBIG), not the process
  std::vector<std::string> args(argv + 1, argv + argc);
  if (!args.empty() && (args[0] == "--help" || args[0] == "-h")) {
    std::cout << "usage: featurekv-server [conf-file] [--directive value ...] [--ignore-snapshot]\n";
    return 0;
  }
  if (!args.empty() && (args[0] == "--version" || args[0] == "-v")) {
    std::cout << "featurekv-server " << FKV_VERSION << "\n";
    return 0;
  }
  bool ignore_snapshot = false;
  std::erase_if(args, [&](const std::string& a) { return a == "--ignore-snapshot" && (ignore_snapshot = true); });
  Config config;
  try {
    if (!args.empty() && args[0].rfind("--", 0) != 0) {
      config.LoadFile(args[0]);
      args.erase(args.begin());
    }
    config.ApplyArgs(args);
  } catch (const ConfigError& e) {
    std::fprintf(stderr, "featurekv: bad config: %s\n", e.what());
    return 1;
  }
  try {
    std::string logfile = config.GetString("logfile");
    std::shared_ptr<spdlog::logger> logger;
    if (logfile.empty()) logger = spdlog::stdout_logger_mt("featurekv");
    else logger = spdlog::basic_logger_mt("featurekv", logfile);
    logger->set_pattern("%Y-%m-%d %H:%M:%S.%e %L %v");
    logger->flush_on(spdlog::level::info);
    logger->set_level(LogLevel(config.GetString("loglevel")));
    spdlog::set_default_logger(logger);
  } catch (const std::exception& e) {
    std::fprintf(stderr, "featurekv: cannot open log: %s\n", e.what());
    return 1;
  }

  Server server(config);
  server.set_ignore_snapshot(ignore_snapshot);
  try {
    server.LoadInitialRegistry();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: bad registry: {}", e.what());
    std::fprintf(stderr, "featurekv: cannot start: bad registry: %s\n", e.what());
    return 1;
  }
  int port;
  try {
    port = server.Start();
  } catch (const std::exception& e) {
    spdlog::critical("cannot start: {}", e.what());
    std::fprintf(stderr, "featurekv: cannot start: %s\n", e.what());
    return 1;
  }
  std::string registry = config.GetString("registry");
  std::string brokers = config.GetString("kafka-brokers");
  std::string loaded = server.snapshots().figures().loaded_from;
  spdlog::info("featurekv {} port={} shards={} registry={} snapshot={} kafka-brokers={}", FKV_VERSION, port,
               config.shards(),
               registry.empty() ? "none (no views: plain Redis commands only)"
                                : registry + " (version " + server.registry()->version() + ", " +
                                      std::to_string(server.registry()->views().size()) + " views)",
               loaded.empty() ? "none" : loaded, brokers.empty() ? "none" : brokers);
  std::string binds;
  for (const auto& b : config.bind()) binds += (binds.empty() ? "" : ",") + b;
  if (port > 0) spdlog::info("Ready to accept connections tcp {} port {}", binds, port);
  if (server.tls_port() > 0) spdlog::info("Ready to accept connections tls {} port {}", binds, server.tls_port());
  server.Wait();
  spdlog::info("featurekv is now ready to exit, bye bye...");
  spdlog::shutdown();
  return 0;
}
