// The metrics endpoint: see metrics.h.
#include "server/metrics.h"

#include <boost/beast/core.hpp>
#include <boost/beast/http.hpp>
#include <spdlog/spdlog.h>

#include <charconv>
#include <cmath>
#include <optional>

#include "server/allocator_stats.h"
#include "server/command.h"
#include "server/server.h"

namespace fkv {

namespace beast = boost::beast;
namespace http = beast::http;

// ---- the exposition text ----

namespace {

// Prometheus text format 0.0.4: label values escape \, " and newline.
std::string Escape(std::string_view v) {
  std::string out;
  out.reserve(v.size());
  for (char c : v) {
    if (c == '\\') out += "\\\\";
    else if (c == '"') out += "\\\"";
    else if (c == '\n') out += "\\n";
    else out += c;
  }
  return out;
}

std::string Num(double v) {
  if (std::isnan(v)) return "NaN";
  if (std::isinf(v)) return v > 0 ? "+Inf" : "-Inf";
  char buf[32];
  auto r = std::to_chars(buf, buf + sizeof buf, v);
  return std::string(buf, r.ptr);
}

using Labels = std::vector<std::pair<std::string, std::string>>;

class Exposition {
 public:
  void Family(const char* name, const char* type, const char* help) {
    out_ += "# HELP ";
    out_ += name;
    out_ += ' ';
    out_ += help;
    out_ += "\n# TYPE ";
    out_ += name;
    out_ += ' ';
    out_ += type;
    out_ += '\n';
  }
  void Sample(std::string_view name, const Labels& labels, double v) {
    out_ += name;
    if (!labels.empty()) {
      out_ += '{';
      for (size_t i = 0; i < labels.size(); i++) {
        if (i) out_ += ',';
        out_ += labels[i].first;
        out_ += "=\"";
        out_ += Escape(labels[i].second);
        out_ += '"';
      }
      out_ += '}';
    }
    out_ += ' ';
    out_ += Num(v);
    out_ += '\n';
  }
  void Sample(std::string_view name, double v) { Sample(name, {}, v); }
  // A family of one unlabelled sample.
  void Single(const char* name, const char* type, const char* help, double v) {
    Family(name, type, help);
    Sample(name, v);
  }
  // A histogram of nanosecond values, exposed in seconds with `le` at the
  // powers of two 2^exps[i] ns (bucket boundaries of LatencyHistogram, so the
  // cumulative counts are exact).
  void Histogram(const std::string& name, Labels labels, const HistogramSnapshot& h, double sum_seconds,
                 std::initializer_list<int> exps) {
    labels.emplace_back("le", "");
    for (int e : exps) {
      labels.back().second = Num(std::ldexp(1.0, e) / 1e9);
      Sample(name + "_bucket", labels, static_cast<double>(h.CountBelow(uint64_t{1} << e)));
    }
    labels.back().second = "+Inf";
    Sample(name + "_bucket", labels, static_cast<double>(h.total));
    labels.pop_back();
    Sample(name + "_sum", labels, sum_seconds);
    Sample(name + "_count", labels, static_cast<double>(h.total));
  }
  std::string& text() { return out_; }

 private:
  std::string out_;
};

// 1 us .. 8.6 s for commands; 1 ms .. 4.6 min for event-to-servable delays.
constexpr std::initializer_list<int> kCommandExps = {10, 12, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 26, 28, 30, 33};
constexpr std::initializer_list<int> kDelayExps = {20, 23, 25, 26, 27, 28, 29, 30, 31, 32, 33, 35, 36, 38};

}  // namespace

bool Ready(Server& server, std::string* why) {
  if (!server.serving()) {
    *why = server.stopping() ? "shutting down" : "loading the snapshot";
    return false;
  }
  KafkaIngest* k = server.kafka();
  if (k == nullptr) return true;
  if (k->group_mode() && k->rebalances() == 0) {
    *why = "waiting for the consumer group's first assignment";
    return false;
  }
  auto parts = k->Partitions();
  if (parts.empty() && !k->group_mode()) {
    *why = "no Kafka partition assigned yet (do the registry's topics exist?)";
    return false;
  }
  int64_t max_lag = 1000;
  try {
    max_lag = std::stoll(server.config().GetString("ready-max-lag"));
  } catch (...) {
  }
  for (const auto& p : parts) {
    std::string name = p.topic + "/" + std::to_string(p.partition);
    if (p.high < 0) {
      *why = "partition " + name + ": high watermark not known yet";
      return false;
    }
    int64_t lag = std::max<int64_t>(0, p.high - std::max<int64_t>(0, p.position));
    if (lag > max_lag) {
      *why = "partition " + name + ": lag " + std::to_string(lag) + " > ready-max-lag " + std::to_string(max_lag);
      return false;
    }
  }
  return true;
}

std::string MetricsText(Server& server) {
  Exposition x;
  const int64_t now_ms = NowMs();
  x.Family("featurekv_build_info", "gauge", "Always 1; the version is a label.");
  x.Sample("featurekv_build_info", {{"version", FKV_VERSION}}, 1);
  x.Single("featurekv_uptime_seconds", "gauge", "Seconds since the server started.",
           static_cast<double>(now_ms - server.start_ms()) / 1000.0);
  std::string why;
  x.Single("featurekv_ready", "gauge", "1 when /readyz answers 200.",
           Ready(server, &why) ? 1 : 0);

  // Commands, from every shard's counters.
  ShardSet& shards = server.shards();
  const auto& specs = CommandTable::Get().all();
  std::vector<CommandTotals> rows = SumCommandStats(shards.AllCommandStats(), specs.size());
  auto cmd = [&](const CommandTotals& r) { return Labels{{"command", specs[r.index].name}}; };
  x.Family("featurekv_commands_total", "counter", "Commands executed, by command.");
  for (const auto& r : rows) x.Sample("featurekv_commands_total", cmd(r), static_cast<double>(r.calls));
  x.Family("featurekv_command_errors_total", "counter", "Commands that replied with an error, by command.");
  for (const auto& r : rows) x.Sample("featurekv_command_errors_total", cmd(r), static_cast<double>(r.failed));
  x.Family("featurekv_command_rejected_total", "counter",
           "Commands refused before running (arity, authentication, maxmemory), by command.");
  for (const auto& r : rows) x.Sample("featurekv_command_rejected_total", cmd(r), static_cast<double>(r.rejected));
  x.Family("featurekv_command_duration_seconds", "histogram",
           "Time to execute a command (a fan-out's includes the other shards), by command.");
  for (const auto& r : rows)
    x.Histogram("featurekv_command_duration_seconds", cmd(r), r.latency, static_cast<double>(r.nanos) / 1e9,
                kCommandExps);

  x.Single("featurekv_connected_clients", "gauge", "Client connections open now.",
           static_cast<double>(server.connected_clients.load()));
  x.Single("featurekv_connections_received_total", "counter", "Client connections accepted.",
           static_cast<double>(server.total_connections.load()));
  AllocatorStats mem = ReadAllocatorStats();
  x.Single("featurekv_memory_used_bytes", "gauge", "Bytes allocated (INFO used_memory).",
           static_cast<double>(server.used_memory.load()));
  x.Single("featurekv_memory_resident_bytes", "gauge", "Resident set size of the process.",
           static_cast<double>(mem.resident));
  uint64_t keys = 0, entities = 0, expired = 0;
  for (int s = 0; s < shards.size(); s++) {
    keys += shards.shard(s).pub_keys.load(std::memory_order_relaxed);
    entities += shards.shard(s).pub_entities.load(std::memory_order_relaxed);
    expired += shards.shard(s).pub_expired.load(std::memory_order_relaxed);
  }
  x.Single("featurekv_keys", "gauge", "Keys of every type (as of the shards' last cron tick).",
           static_cast<double>(keys));
  x.Single("featurekv_entities", "gauge", "Entity keys (feature state).",
           static_cast<double>(entities));
  x.Family("featurekv_shard_loop_lag_seconds", "gauge",
           "How late the shard's last cron tick ran: how long work queued on its loop kept it waiting.");
  for (int i = 0; i < server.shards().size(); i++)
    x.Sample("featurekv_shard_loop_lag_seconds", {{"shard", std::to_string(i)}},
             static_cast<double>(server.shards().shard(i).pub_loop_lag_us.load(std::memory_order_relaxed)) / 1e6);
  x.Single("featurekv_expired_keys_total", "counter", "Keys removed by expiry.",
           static_cast<double>(expired));

  // The feature pipeline.
  IngestStats& st = server.ingest_stats;
  auto applied = st.applied_by_view();
  for (const ViewDef& v : server.registry()->views()) applied.try_emplace(v.name);  // every view, 0 before its first event
  x.Family("featurekv_events_applied_total", "counter",
           "Events applied to each view (an event that feeds two views counts in both).");
  for (const auto& [view, f] : applied)
    x.Sample("featurekv_events_applied_total", {{"view", view}}, static_cast<double>(f.applied));
  x.Family("featurekv_view_freshness_seconds", "gauge",
           "Now minus the newest event time applied to the view (views with data only).");
  for (const auto& [view, f] : applied)
    if (f.applied > 0)
      x.Sample("featurekv_view_freshness_seconds", {{"view", view}}, static_cast<double>(now_ms - f.newest_ts_ms) / 1000.0);
  x.Family("featurekv_events_rejected_total", "counter", "Events rejected whole, by source and reason.");
  for (const auto& [sr, n] : st.rejected_by_source())
    x.Sample("featurekv_events_rejected_total", {{"source", sr.first}, {"reason", sr.second}}, static_cast<double>(n));
  x.Single("featurekv_events_too_old_total", "counter", "(event, aggregation) pairs dropped because the tile can no longer be in any window.",
           static_cast<double>(st.events_too_old.load()));
  // The consumer is created during start: read it only once serving (the
  // flag is set, with release, after it exists).
  if (KafkaIngest* k = server.serving() ? server.kafka() : nullptr) {
    x.Single("featurekv_kafka_messages_total", "counter", "Kafka messages consumed.",
             static_cast<double>(k->messages()));
    x.Single("featurekv_kafka_dead_lettered_total", "counter", "Rejected messages written to the dead-letter topic.",
             static_cast<double>(k->dead_lettered()));
    x.Single("featurekv_kafka_stale_dropped_total", "counter", "Messages below this process's position (or of a revoked partition), dropped.",
             static_cast<double>(k->stale_dropped()));
    x.Single("featurekv_kafka_rebalances_total", "counter", "Consumer group rebalances.",
             static_cast<double>(k->rebalances()));
    x.Single("featurekv_kafka_batches_in_flight", "gauge", "Batches consumed but not yet wholly applied.",
             static_cast<double>(k->batches_in_flight()));
    x.Family("featurekv_kafka_shard_queue_batches", "gauge",
             "Kafka batches handed to the shard and not yet wholly applied by it.");
    for (int i = 0; i < server.shards().size(); i++)
      x.Sample("featurekv_kafka_shard_queue_batches", {{"shard", std::to_string(i)}},
               static_cast<double>(k->shard_batches(i)));
    x.Family("featurekv_kafka_lag_messages", "gauge",
             "High watermark minus position, by assigned partition (absent while the watermark is unknown).");
    for (const auto& p : k->Partitions())
      if (p.high >= 0)
        x.Sample("featurekv_kafka_lag_messages", {{"topic", p.topic}, {"partition", std::to_string(p.partition)}},
                 static_cast<double>(std::max<int64_t>(0, p.high - std::max<int64_t>(0, p.position))));
    HistogramSnapshot h;
    double sum = 0;
    k->DelayHistogram(&h, &sum);
    x.Family("featurekv_event_to_servable_seconds", "histogram",
             "From a message's Kafka timestamp until its batch is applied on every shard.");
    x.Histogram("featurekv_event_to_servable_seconds", {}, h, sum, kDelayExps);
  }

  PersistenceFigures p = server.snapshots().figures();
  x.Single("featurekv_snapshot_last_success_timestamp_seconds", "gauge", "Unix time of the last successful snapshot's cut (0: none since start).",
           p.saves_ok > 0 ? static_cast<double>(p.last_save_ms) / 1000.0 : 0);
  x.Single("featurekv_snapshot_last_duration_seconds", "gauge", "Duration of the last snapshot (-1: none yet).",
           p.last_duration_ms < 0 ? -1.0 : static_cast<double>(p.last_duration_ms) / 1000.0);
  x.Single("featurekv_snapshot_last_size_bytes", "gauge", "Size of the last snapshot file.",
           static_cast<double>(p.last_bytes));
  x.Single("featurekv_snapshot_failures_total", "counter", "Snapshots that failed.",
           static_cast<double>(p.saves_failed));
  x.Single("featurekv_snapshot_in_progress", "gauge", "1 while a snapshot is written.",
           p.in_progress ? 1 : 0);

  auto drift = server.drift().latest();
  x.Family("featurekv_feature_drift_psi", "gauge",
           "PSI of a feature's distribution across the view's entities against its FDRIFT baseline.");
  for (const auto& [view, rows] : drift)
    for (const auto& r : rows)
      if (!std::isnan(r.psi)) x.Sample("featurekv_feature_drift_psi", {{"view", view}, {"feature", r.feature}}, r.psi);
  x.Family("featurekv_feature_drift_entities", "gauge",
           "Entities with a value of the feature in the last drift computation.");
  for (const auto& [view, rows] : drift)
    for (const auto& r : rows)
      x.Sample("featurekv_feature_drift_entities", {{"view", view}, {"feature", r.feature}},
               static_cast<double>(r.current_n));
  return std::move(x.text());
}

// ---- the HTTP server ----

class HttpSession : public std::enable_shared_from_this<HttpSession> {
 public:
  HttpSession(MetricsServer* owner, asio::ip::tcp::socket s) : owner_(owner), stream_(std::move(s)) {}
  ~HttpSession() { owner_->sessions_.fetch_sub(1); }

  void Read() {
    parser_.emplace();
    parser_->header_limit(MetricsServer::kMaxHeaderBytes);
    parser_->body_limit(4096);
    stream_.expires_after(std::chrono::seconds(10));
    http::async_read(stream_, buffer_, *parser_,
                     [self = shared_from_this()](beast::error_code ec, size_t) { self->OnRead(ec); });
  }

 private:
  void OnRead(beast::error_code ec) {
    if (ec == http::error::end_of_stream) return Close();
    if (ec) {
      // A request that does not parse gets 400; a peer that went away or
      // stayed silent past the timeout is just closed.
      if (ec.category() == http::make_error_code(http::error::bad_method).category())
        return Reply(http::status::bad_request, "bad request\n", false);
      return Close();
    }
    const auto& req = parser_->get();
    bool keep = req.keep_alive();
    if (req.method() != http::verb::get) return Reply(http::status::method_not_allowed, "only GET\n", keep);
    std::string_view target(req.target().data(), req.target().size());
    target = target.substr(0, target.find('?'));
    Server& server = *owner_->server_;
    if (target == "/metrics")
      return Reply(http::status::ok, MetricsText(server), keep, "text/plain; version=0.0.4; charset=utf-8");
    if (target == "/healthz") {
      if (server.stopping()) return Reply(http::status::service_unavailable, "shutting down\n", keep);
      return Reply(http::status::ok, "ok\n", keep);
    }
    if (target == "/readyz") {
      std::string why;
      if (Ready(server, &why)) return Reply(http::status::ok, "ready\n", keep);
      return Reply(http::status::service_unavailable, why + "\n", keep);
    }
    Reply(http::status::not_found, "not found\n", keep);
  }

  void Reply(http::status status, std::string body, bool keep_alive,
             const char* type = "text/plain; charset=utf-8") {
    auto res = std::make_shared<http::response<http::string_body>>(status, 11);
    res->set(http::field::server, "featurekv");
    res->set(http::field::content_type, type);
    if (status == http::status::method_not_allowed) res->set(http::field::allow, "GET");
    res->keep_alive(keep_alive);
    res->body() = std::move(body);
    res->prepare_payload();
    stream_.expires_after(std::chrono::seconds(10));
    http::async_write(stream_, *res, [self = shared_from_this(), res](beast::error_code ec, size_t) {
      if (ec || !res->keep_alive()) return self->Close();
      self->Read();
    });
  }

  void Close() {
    beast::error_code ec;
    stream_.socket().shutdown(asio::ip::tcp::socket::shutdown_send, ec);
    stream_.close();
  }

  MetricsServer* owner_;
  beast::tcp_stream stream_;
  beast::flat_buffer buffer_{MetricsServer::kMaxHeaderBytes + 4096};
  std::optional<http::request_parser<http::string_body>> parser_;
};

MetricsServer::MetricsServer(Server* server) : server_(server) {}

MetricsServer::~MetricsServer() { Stop(); }

int MetricsServer::Start(const std::string& address, int port) {
  boost::system::error_code ec;
  auto ip = asio::ip::make_address(address == "*" ? "0.0.0.0" : address, ec);
  if (ec) throw std::runtime_error("bad metrics-bind address '" + address + "'");
  asio::ip::tcp::endpoint ep(ip, static_cast<unsigned short>(port));
  acceptor_ = std::make_unique<asio::ip::tcp::acceptor>(io_);
  acceptor_->open(ep.protocol(), ec);
  if (!ec) acceptor_->set_option(asio::socket_base::reuse_address(true), ec);
  if (!ec) acceptor_->bind(ep, ec);
  if (!ec) acceptor_->listen(128, ec);
  if (ec) throw std::runtime_error("cannot listen on " + address + ":" + std::to_string(port) + " (metrics): " + ec.message());
  int bound = acceptor_->local_endpoint().port();
  Accept();
  thread_ = std::thread([this] {
    pthread_setname_np(pthread_self(), "fkv-metrics");
    LowerThreadPriority(kNice);  // a scrape never takes a CPU from a shard serving reads
    io_.run();
  });
  return bound;
}

void MetricsServer::Accept() {
  acceptor_->async_accept([this](boost::system::error_code ec, asio::ip::tcp::socket socket) {
    if (ec == asio::error::operation_aborted) return;
    if (!ec) {
      if (sessions_.load() >= kMaxSessions) {
        socket.close(ec);  // too many at once: the newest goes
      } else {
        sessions_.fetch_add(1);
        std::make_shared<HttpSession>(this, std::move(socket))->Read();
      }
    } else {
      spdlog::debug("metrics accept: {}", ec.message());
    }
    Accept();
  });
}

void MetricsServer::Stop() {
  if (!thread_.joinable()) return;
  asio::post(io_, [this] {
    boost::system::error_code ec;
    if (acceptor_) acceptor_->close(ec);
  });
  io_.stop();
  thread_.join();
}

}  // namespace fkv
