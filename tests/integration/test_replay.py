"""FREPLAY: a view marked `backfill: true` is held from live Kafka ingest until
a replay of a time range releases it; the replay fills it with the messages
before that moment and live ingest with those after, so every message reaches
it once. Against a brute-force model of the messages (read back with kcat),
with events flowing during the replay, by Kafka timestamp ranges, and across
a kill -9 in the middle of a replay (it resumes from the snapshot).

Usage: test_replay.py SERVER MOCK_KAFKA PRODUCE LOAD
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from fkv_testlib import ServerProcess, wait_until  # noqa: E402
from test_kafka_tools import MockCluster, kcat_read  # noqa: E402
import test_kafka_tools  # noqa: E402
import redis  # noqa: E402

SERVER = sys.argv[1] if len(sys.argv) > 1 else "build/server/featurekv-server"
test_kafka_tools.MOCK = sys.argv[2] if len(sys.argv) > 2 else "build/tools/featurekv-mock-kafka"
PRODUCE = sys.argv[3] if len(sys.argv) > 3 else "build/tools/featurekv-produce"
LOAD = sys.argv[4] if len(sys.argv) > 4 else "build/tools/featurekv-load"
DEMO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "conf", "features.yaml")

# A second view of the users, filled by replay: the demo's clicks again, and
# every event, under other feature names.
BACKFILL_VIEW = """
  user_history:
    entity: user
    source: user_events
    backfill: true
    features:
      hist_clicks: {agg: count, where: "action == 'click'", windows: [1h]}
      hist_events: {agg: count, windows: [24h]}
"""


def demo_text():
    with open(DEMO) as f:
        return f.read()


def wait_for(pred, deadline_s, what):
    return wait_until(pred, timeout=deadline_s, what=what)


def ingest(r):
    return r.info("ingest")


def caught_up(r, total):
    """Every message of user_events consumed and applied."""
    info = ingest(r)
    parts = [dict(kv.split("=") for kv in v.split(",")) if isinstance(v, str) else v
             for k, v in info.items() if k.startswith("partition_user_events_")]
    return (parts and all(int(p["position"]) == int(p["high"]) for p in parts)
            and sum(int(p["high"]) for p in parts) == total and int(info["kafka_batches_in_flight"]) == 0)


def replay_over(r):
    st = ingest(r)["replay_status"]
    return st if st in ("done", "cancelled", "failed") else None


class ReplayCase(unittest.TestCase):
    PARTS = 4

    def setUp(self):
        self.mock = MockCluster("--partitions", str(self.PARTS), "--topic", "user_events")
        self.dir = tempfile.mkdtemp(prefix="fkv-replay-")
        self.reg = os.path.join(self.dir, "features.yaml")
        self.data = os.path.join(self.dir, "data")
        os.mkdir(self.data)
        self.servers = []

    def tearDown(self):
        for s in self.servers:
            if s.alive():
                s.kill()
        self.mock.kill()

    def write_registry(self, with_backfill):
        with open(self.reg, "w") as f:
            f.write(demo_text() + (BACKFILL_VIEW if with_backfill else ""))

    def start(self, shards=2, extra=()):
        srv = ServerProcess(SERVER, shards=shards, data_dir=self.data,
                            directives=[("registry", self.reg), ("kafka-brokers", self.mock.bootstrap),
                                        ("save", "")] + list(extra)).start()
        self.servers.append(srv)
        return srv, srv.redis(decode_responses=True)

    def produce(self, count, seed, rate=0, users=50):
        return subprocess.Popen([PRODUCE, "--brokers", self.mock.bootstrap, "--count", str(count), "--rate", str(rate),
                                 "--users", str(users), "--products", "20", "--seed", str(seed)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

    def finish(self, proc, timeout):
        _, err = proc.communicate(timeout=timeout)
        self.assertEqual(proc.returncode, 0, err)

    def kcat(self, lines, partition=None):
        where = [] if partition is None else ["-p", str(partition)]
        p = subprocess.run(["kcat", "-b", self.mock.bootstrap, "-P", "-t", "user_events"] + where,
                           input="\n".join(lines) + "\n", capture_output=True, text=True, timeout=60)
        self.assertEqual(p.returncode, 0, p.stderr)

    def model(self, total):
        clicks, events = {}, {}
        for line in kcat_read(self.mock.bootstrap, "user_events", total):
            e = json.loads(line.split(" ", 2)[2])
            u = e["user_id"]
            clicks[u] = clicks.get(u, 0) + (e["action"] == "click")
            events[u] = events.get(u, 0) + 1
        return clicks, events

    def assert_history_matches(self, r, total):
        """Both views equal the model of every message: the live one, and the
        one filled by replay below its end and live after it."""
        clicks, events = self.model(total)
        users = sorted(events)
        got = r.execute_command("FMGET", *["user:%d" % u for u in users], "FEATURES", "clicks_1h", "hist_clicks_1h",
                                "hist_events_24h")
        self.assertEqual([g[0] for g in got], [clicks[u] for u in users])
        self.assertEqual([g[1] for g in got], [clicks[u] for u in users])
        self.assertEqual([g[2] for g in got], [events[u] for u in users])


class ReplayTest(ReplayCase):
    def test_a_view_added_later_is_filled_once_while_events_flow(self):
        self.write_registry(False)
        srv, r = self.start()
        p = self.produce(20000, seed=1)
        self.finish(p, 120)
        wait_for(lambda: caught_up(r, 20000), 120, "the first 20000 events")
        self.write_registry(True)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(ingest(r)["replay_status"], "none")
        # Held: live ingest applies nothing to the new view.
        self.kcat(['{"user_id":7,"product_id":1,"action":"click","timestamp":%d}' % int(time.time())] * 3)
        wait_for(lambda: caught_up(r, 20003), 60, "3 more clicks")
        self.assertEqual(r.execute_command("FGET", "user:7", "hist_clicks_1h", "hist_events_24h"), [0, 0])
        # Events flow during the replay: each is counted once, by the replay
        # (below the live position at its start) or live (after it).
        flowing = self.produce(6000, seed=2, rate=3000)
        wait_for(lambda: int(ingest(r)["events_applied"]) > 20100, 60, "events flowing")
        self.assertEqual(r.execute_command("FREPLAY", "user_events", "FROM", "0"), "OK")
        self.assertEqual(wait_for(lambda: replay_over(r), 120, "the replay"), "done", ingest(r).get("replay_error"))
        self.finish(flowing, 120)
        wait_for(lambda: caught_up(r, 26003), 120, "every event")
        info = ingest(r)
        self.assertEqual(info["replay_views"], "user_history")
        self.assertEqual(info["replay_released_views"], "user_history")
        self.assertEqual(info["replay_partitions"], self.PARTS)
        self.assertEqual(info["replay_partitions_done"], self.PARTS)
        self.assertEqual(info["replay_out_of_range"], 0)
        self.assertEqual(info["replay_applied"], info["replay_read"])
        self.assertGreaterEqual(info["replay_read"], 20003)
        self.assertLess(info["replay_read"], 26003)
        self.assertEqual(info["events_applied"], 26003)  # the replay is not counted as ingest again
        self.assert_history_matches(r, 26003)
        # Released: a second replay into it is refused, and live events reach it.
        with self.assertRaisesRegex(redis.ResponseError, "no view of source 'user_events' waits for a backfill"):
            r.execute_command("FREPLAY", "user_events", "FROM", "0")
        with self.assertRaisesRegex(redis.ResponseError, "'user_history' was already released"):
            r.execute_command("FREPLAY", "user_events", "FROM", "0", "VIEWS", "user_history")
        before = r.execute_command("FGET", "user:7", "clicks_1h", "hist_clicks_1h")
        self.kcat(['{"user_id":7,"product_id":1,"action":"click","timestamp":%d}' % int(time.time())])
        wait_for(lambda: caught_up(r, 26004), 60, "one more click")
        self.assertEqual(r.execute_command("FGET", "user:7", "clicks_1h", "hist_clicks_1h"),
                         [before[0] + 1, before[1] + 1])
        self.assertEqual(before[0], before[1])

    def test_from_and_to_select_by_kafka_timestamp_and_the_release_survives_a_restart(self):
        # Partition 0 only; partitions 1-3 stay empty until the end.
        self.write_registry(True)
        srv, r = self.start(extra=[("appendonly", "no")])
        now = int(time.time())
        click = '{"user_id":1,"product_id":2,"action":"click","timestamp":%d}' % now

        def kafka_ms():
            time.sleep(0.02)  # a millisecond apart from the messages on either side (Kafka time is in ms)
            t = int(time.time() * 1000)
            time.sleep(0.02)
            return t

        self.kcat([click] * 10, partition=0)
        wait_for(lambda: caught_up(r, 10), 60, "A")
        t1 = kafka_ms()
        self.kcat([click] * 7, partition=0)
        wait_for(lambda: caught_up(r, 17), 60, "B")
        t2 = kafka_ms()
        self.kcat([click] * 5, partition=0)
        wait_for(lambda: caught_up(r, 22), 60, "C")
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h", "hist_clicks_1h"), [22, 0])
        self.assertEqual(ingest(r)["replay_released_views"], "")
        # Partitions 1-3 have no message: live ingest reads them from the
        # start, so the replay has nothing to read there.
        self.assertEqual(r.execute_command("FREPLAY", "user_events", "FROM", str(t1), "TO", str(t2)), "OK")
        self.assertEqual(wait_for(lambda: replay_over(r), 60, "the replay"), "done", ingest(r).get("replay_error"))
        info = ingest(r)
        self.assertEqual((info["replay_read"], info["replay_applied"], info["replay_out_of_range"]), (22, 7, 15))
        self.assertEqual((info["replay_from_ms"], info["replay_to_ms"]), (t1, t2))
        self.assertEqual((info["replay_partitions"], info["replay_partitions_done"]), (4, 4))
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h", "hist_clicks_1h"), [22, 7])
        self.kcat([click] * 2)
        wait_for(lambda: caught_up(r, 24), 60, "D")
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h", "hist_clicks_1h"), [24, 9])
        # The release is kept by the snapshot: after a restart the view still
        # takes live events (and no replay waits).
        self.assertTrue(r.save())
        srv.stop()
        srv, r = self.start()
        self.assertEqual(ingest(r)["replay_released_views"], "user_history")
        self.assertEqual(ingest(r)["replay_status"], "none")
        self.kcat([click])
        wait_for(lambda: caught_up(r, 25), 60, "E")
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h", "hist_clicks_1h"), [25, 10])
        # A registry without the view forgets the release; the view added
        # again is new, empty and held.
        # (at the reload itself: no event needs to come in between).
        self.write_registry(False)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(ingest(r)["replay_released_views"], "")
        self.write_registry(True)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.kcat([click])
        wait_for(lambda: caught_up(r, 26), 60, "F")
        self.assertEqual(r.execute_command("FGET", "user:1", "clicks_1h", "hist_clicks_1h"), [26, 0])

    def test_featurekv_load_replay_drives_freplay_and_waits_for_it(self):
        self.write_registry(True)
        srv, r = self.start()
        p = self.produce(3000, seed=6)
        self.finish(p, 120)
        wait_for(lambda: caught_up(r, 3000), 60, "3000 events")

        def load(*args):
            return subprocess.run([LOAD, "--port", str(srv.port), *args], capture_output=True, text=True, timeout=120)

        self.assertEqual(load("--replay", "--source", "user_events", "--from", "now-1h", "x.jsonl").returncode, 2)
        self.assertEqual(load("--replay", "--source", "user_events").returncode, 2)
        self.assertEqual(load("--from", "5", "x.jsonl").returncode, 2)
        out = load("--replay", "--source", "user_events", "--from", "now-1h", "--views", "user_history")
        self.assertEqual(out.returncode, 0, out.stderr)
        self.assertIn("featurekv-load: replay done: 3000 read, 3000 applied, 0 out of range, partitions 4/4",
                      out.stderr)
        self.assertEqual(ingest(r)["replay_from_ms"] > int(time.time() * 1000) - 3700 * 1000, True)
        self.assert_history_matches(r, 3000)
        again = load("--replay", "--source", "user_events", "--from", "0")
        self.assertEqual(again.returncode, 1)
        self.assertIn("FREPLAY refused: ERR no view of source 'user_events' waits for a backfill", again.stderr)

    def test_bad_calls_are_refused_and_change_nothing(self):
        self.write_registry(True)
        srv, r = self.start()
        wait_for(lambda: "partition_user_events_0" in ingest(r), 30, "user_events assigned")
        cases = [
            (["FREPLAY", "nosuch", "FROM", "0"], "unknown source 'nosuch'"),
            (["FREPLAY", "user_events", "FROM", "-5"], "FROM is a time in Unix milliseconds"),
            (["FREPLAY", "user_events", "FROM", "abc"], "FROM is a time in Unix milliseconds"),
            (["FREPLAY", "user_events", "FROM", "5", "TO", "5"], "TO must be after FROM"),
            (["FREPLAY", "user_events", "SINCE", "5"], "syntax error"),
            (["FREPLAY", "user_events", "FROM", "5", "VIEWS"], "syntax error"),
            (["FREPLAY", "user_events", "FROM", "0", "VIEWS", "user_activity"], "is not marked backfill: true"),
            (["FREPLAY", "user_events", "FROM", "0", "VIEWS", "nosuch"], "unknown view 'nosuch'"),
            (["FREPLAY", "CANCEL"], "no replay is running"),
        ]
        for args, want in cases:
            with self.assertRaisesRegex(redis.ResponseError, want):
                r.execute_command(*args)
        self.assertEqual(ingest(r)["replay_status"], "none")
        with r.pipeline() as p:  # an admin command that waits on ingest: not inside MULTI
            p.execute_command("FREPLAY", "user_events", "FROM", "0")
            with self.assertRaises(redis.ResponseError):
                p.execute()
        self.assertEqual(ingest(r)["replay_status"], "none")
        # Without Kafka there is nothing to replay.
        plain = ServerProcess(SERVER, directives=[("registry", self.reg)]).start()
        self.servers.append(plain)
        with self.assertRaisesRegex(redis.ResponseError, "FREPLAY needs Kafka ingest"):
            plain.redis().execute_command("FREPLAY", "user_events", "FROM", "0")

    def test_cancel_stops_the_replay_and_keeps_the_view_released(self):
        self.write_registry(True)
        srv, r = self.start(extra=[("kafka-replay-rate", "20000")])
        p = self.produce(60000, seed=3)
        self.finish(p, 120)
        wait_for(lambda: caught_up(r, 60000), 120, "60000 events")
        users = ["user:%d" % u for u in range(50)]

        def replayed():
            return sum(g[0] for g in r.execute_command("FMGET", *users, "FEATURES", "hist_events_24h"))

        # Cancelled at once (pipelined: the ingest thread has most likely not
        # started it yet): the views stay held, nothing replayed.
        with r.pipeline(transaction=False) as pipe:
            pipe.execute_command("FREPLAY", "user_events", "FROM", "0")
            pipe.execute_command("FREPLAY", "CANCEL")
            self.assertEqual(pipe.execute(), ["OK", "OK"])
        self.assertEqual(wait_for(lambda: replay_over(r), 60, "the replay to end"), "cancelled")
        info = ingest(r)
        if "before it started" in info.get("replay_error", ""):
            self.assertEqual((info["replay_released_views"], info["replay_read"], replayed()), ("", 0, 0))
        else:
            self.assertEqual(info["replay_released_views"], "user_history")
            self.assertEqual(replayed(), info["replay_applied"])
            return
        # Cancelled while it runs (kafka-replay-rate makes it last 3 s): the
        # view keeps what was replayed, no more, and takes live events.
        self.assertEqual(r.execute_command("FREPLAY", "user_events", "FROM", "0"), "OK")
        wait_for(lambda: ingest(r)["replay_read"] > 5000, 30, "the replay under way")
        self.assertEqual(r.execute_command("FREPLAY", "CANCEL"), "OK")
        self.assertEqual(wait_for(lambda: replay_over(r), 60, "the replay to end"), "cancelled")
        info = ingest(r)
        self.assertEqual(info["replay_released_views"], "user_history")
        self.assertLess(info["replay_applied"], 60000)
        self.assertEqual(replayed(), info["replay_applied"])
        with self.assertRaisesRegex(redis.ResponseError, "no replay is running"):
            r.execute_command("FREPLAY", "CANCEL")


class ReplayCrashTest(ReplayCase):
    PARTS = 8

    RATE = [("kafka-replay-rate", "25000")]  # 150,000 messages: 6 s of replay at least

    def test_kill_9_in_the_middle_of_a_replay_resumes_from_the_snapshot(self):
        self.write_registry(True)
        srv, r = self.start(extra=self.RATE)
        p = self.produce(150000, seed=4, users=200)
        self.finish(p, 180)
        wait_for(lambda: caught_up(r, 150000), 180, "150000 events")
        self.assertEqual(r.execute_command("FREPLAY", "user_events", "FROM", "0"), "OK")
        wait_for(lambda: ingest(r)["replay_read"] > 10000, 30, "the replay under way")
        r.save()  # the cut lands in the middle of the replay (kafka-replay-rate)
        self.assertEqual(ingest(r)["replay_status"], "running")
        srv.kill()  # SIGKILL
        srv, r = self.start()
        self.assertEqual(ingest(r)["replay_resumed"], 1)
        self.assertEqual(wait_for(lambda: replay_over(r), 120, "the resumed replay"), "done",
                         ingest(r).get("replay_error"))
        self.assertLess(ingest(r)["replay_read"], 150000)  # only the rest was read again
        more = self.produce(3000, seed=5, users=200)
        self.finish(more, 120)
        wait_for(lambda: caught_up(r, 153000), 120, "every event")
        self.assertEqual(ingest(r)["replay_released_views"], "user_history")
        self.assert_history_matches(r, 153000)

    def test_a_reload_that_drops_a_view_stops_filling_it(self):
        self.write_registry(True)
        srv, r = self.start(extra=self.RATE)
        p = self.produce(100000, seed=7, users=200)
        self.finish(p, 180)
        wait_for(lambda: caught_up(r, 100000), 180, "100000 events")
        self.assertEqual(r.execute_command("FREPLAY", "user_events", "FROM", "0"), "OK")
        wait_for(lambda: ingest(r)["replay_read"] > 5000, 30, "the replay under way")
        self.write_registry(False)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(wait_for(lambda: replay_over(r), 30, "the replay to stop"), "failed")
        self.assertEqual(ingest(r)["replay_error"], "its views left the registry")
        self.assertEqual(ingest(r)["replay_released_views"], "")
        # Added again: new, empty, held; a new replay fills all of it.
        self.write_registry(True)
        self.assertEqual(r.execute_command("FREGISTRY", "RELOAD"), "OK")
        self.assertEqual(r.execute_command("FGET", "user:1", "hist_events_24h"), [0])
        self.assertEqual(r.execute_command("FREPLAY", "user_events", "FROM", "0"), "OK")
        self.assertEqual(wait_for(lambda: replay_over(r), 60, "the second replay"), "done")
        self.assert_history_matches(r, 100000)


if __name__ == "__main__":
    unittest.main(argv=sys.argv[:1] + sys.argv[5:], verbosity=2)
