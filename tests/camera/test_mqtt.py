"""mqtt:// output against a real broker (mosquitto, started by the tests on a free port) and a real subscriber
(paho): every frame's message arrives, is byte for byte the run's JSONL line and validates against the
schema; the broker killed mid-run and restarted on the same port: the loop never stops, the gap is counted
exactly, messages resume; a broker that refuses us, never answers or is not there: every frame still runs,
every message is counted dropped; credentials are used and never logged."""
from __future__ import annotations

import getpass
import json
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest

from edgekit.camera import outputs
from edgekit.camera.http_view import HttpViewSink
from edgekit.camera.loop import CameraConfig, run_camera
from edgekit.camera.mqtt import MqttSink, parse_mqtt
from edgekit.camera.records import load_schema
from edgekit.errors import EdgekitError
from repo_files import write_noise_video

mqtt = pytest.importorskip("paho.mqtt.client", reason="the mqtt extra (pip install 'edgekit[mqtt]')")
jsonschema = pytest.importorskip("jsonschema", reason="jsonschema (the dev extra) validates records in tests")
MOSQUITTO = shutil.which("mosquitto") or shutil.which("mosquitto", path="/usr/sbin:/usr/local/sbin")
needs_broker = pytest.mark.skipif(MOSQUITTO is None, reason="needs mosquitto (apt-get install mosquitto, as "
                                                            "scripts/setup.sh does as root)")
TOPIC = "edgekit/test/cam"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, what: str, timeout: float = 30.0) -> None:
    """Poll until `predicate()`; a bound on waiting for the broker (not a speed check)."""
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"waited {timeout:.0f} s for {what}")
        time.sleep(0.01)


class Broker:
    """mosquitto on 127.0.0.1:port, no persistence; with `users`, only those (a password file) may connect."""

    def __init__(self, folder: Path, port: int, users: dict[str, str] | None = None) -> None:
        self.port, self.log = port, folder / "mosquitto.log"
        # as root, mosquitto would switch to the user 'mosquitto', who cannot read pytest's private tmp folder
        conf = [f"listener {port} 127.0.0.1", "persistence false", f"user {getpass.getuser()}"]
        if users:
            pw = folder / "passwords"
            pw.touch(mode=0o600)
            for user, password in users.items():
                subprocess.run([shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd", "-b", str(pw),
                                user, password], check=True, timeout=30)
            conf += ["allow_anonymous false", f"password_file {pw}"]
        else:
            conf += ["allow_anonymous true"]
        self.conf = folder / "mosquitto.conf"
        self.conf.write_text("\n".join(conf) + "\n")
        self.proc: subprocess.Popen | None = None

    def start(self) -> "Broker":
        self.proc = subprocess.Popen([MOSQUITTO, "-c", str(self.conf)], stdout=subprocess.DEVNULL,
                                     stderr=open(self.log, "ab"))

        def up() -> bool:
            assert self.proc.poll() is None, self.log.read_text()[-2000:]
            with socket.socket() as s:
                return s.connect_ex(("127.0.0.1", self.port)) == 0
        wait_for(up, "mosquitto to listen")
        return self

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(timeout=30)


class Subscriber:
    """A real MQTT client that (re)subscribes to TOPIC on every connect and keeps each payload it receives."""

    def __init__(self, port: int, user: str | None = None, password: str | None = None) -> None:
        self.payloads: list[bytes] = []
        self.subscribed = threading.Event()
        c = self.client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2)
        if user:
            c.username_pw_set(user, password)
        c.reconnect_delay_set(min_delay=0.05, max_delay=0.2)
        c.on_connect = lambda cl, u, f, rc, p: cl.subscribe(TOPIC, qos=0)
        c.on_subscribe = lambda cl, u, mid, rcs, p: self.subscribed.set()
        c.on_message = lambda cl, u, msg: self.payloads.append(bytes(msg.payload))
        c.connect_async("127.0.0.1", port)
        c.loop_start()
        wait_for(self.subscribed.is_set, "the subscriber to subscribe")

    def frames(self) -> list[int]:
        return [json.loads(p)["frame"] for p in list(self.payloads)]

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


@pytest.fixture
def sinks(monkeypatch) -> list[MqttSink]:
    """The MqttSink instances run_camera opens, kept so a test can read their state; reconnect backoff capped
    at 1 s (default 30 s) so a restarted broker is found within a short run."""
    made: list[MqttSink] = []

    class Kept(MqttSink):
        def __init__(self, uri: str, **kw) -> None:
            super().__init__(uri, **{"max_delay": 1.0, **kw})
            made.append(self)

    monkeypatch.setattr(outputs, "MqttSink", Kept)
    return made


@pytest.mark.slow
@needs_broker
def test_every_frame_arrives_as_its_jsonl_line_and_a_broker_restart_is_a_counted_gap(model_dir, tmp_path, sinks):
    """A real video through the real loop (a tiny real classifier), paced at 20 ms a frame, to a .jsonl file
    and to the broker. After frame K1 the broker is killed (SIGKILL); after frame K2 it is started again on
    the same port. The test lets the broker forward every message before the kill and lets paho see the
    connection go before the next frame, so no message is written into a dead socket: with QoS 0 one written
    there would be lost without anyone knowing, and the count could then fall short of the gap by those few.
    So here the gap is counted exactly: frames missing at the subscriber == the sink's dropped count, all of
    them dropped as "broker away", and every frame from the sink's reconnect to the end arrives."""
    n, k1, k2 = 240, 60, 90
    video = write_noise_video(tmp_path / "v.avi", n, (64, 48))
    port = free_port()
    broker = Broker(tmp_path, port).start()
    sub = Subscriber(port)
    uri = f"mqtt://127.0.0.1:{port}/{TOPIC}"

    def on_frame(rec: dict) -> None:
        i = rec["frame"]
        time.sleep(0.02)  # a camera's pace: the reconnect happens while frames keep coming
        if i == k1:
            wait_for(lambda: len(sub.payloads) == k1 + 1, "frames 0..K1 at the subscriber")
            sub.subscribed.clear()
            broker.kill()
            wait_for(lambda: not sinks[0].connected, "the sink to see the broker gone")
        elif i == k2:
            broker.start()
            wait_for(sub.subscribed.is_set, "the subscriber to subscribe again")  # the test's client only

    try:
        rep = run_camera(CameraConfig(input=str(video), output=[str(tmp_path / "r.jsonl"), uri],
                                      classifier=str(model_dir), threads=1), on_frame=on_frame)
        wait_for(lambda: (sub.frames() or [-1])[-1] == n - 1, "the last frame at the subscriber")
    finally:
        sub.close()
        broker.kill()

    assert rep["status"] == "ok" and rep["frames"] == n  # the loop ran every frame through the outage
    lines = (tmp_path / "r.jsonl").read_text().splitlines()
    validator = jsonschema.Draft202012Validator(load_schema())
    got = sub.frames()
    assert got == sorted(set(got)), "each message once, in order"
    for payload, frame in zip(sub.payloads, got):
        assert payload.decode() == lines[frame]  # byte for byte the JSONL line of that frame
        validator.validate(json.loads(payload))
    resumed = min(f for f in got if f > k1)
    missing = [f for f in range(n) if f not in set(got)]
    assert missing == list(range(k1 + 1, resumed)) and k2 < resumed < n - 1  # one gap, then every frame
    stats = rep["outputs_stats"][uri]
    assert stats["dropped"] == stats["dropped_offline"] == len(missing) > k2 - k1 - 1
    assert stats["sent"] == len(got) and stats["frames"] == n
    assert (stats["connects"], stats["disconnects"], stats["dropped_in_flight"]) == (2, 1, 0)


@needs_broker
def test_refused_silent_and_absent_brokers_cost_the_loop_nothing_and_credentials_stay_secret(
        model_dir, tmp_path, caplog, sinks):
    """Three outputs in one run: a broker that refuses our password, a socket that accepts TCP and never
    answers, a port with nothing on it. Every frame runs, every message is counted dropped, the run ends
    normally; the password is in no log line, no report and no error. A right password gets through."""
    port = free_port()
    broker = Broker(tmp_path, port, users={"cam": "right-pass"}).start()
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)  # the kernel completes the handshake; nobody ever reads
    uris = [f"mqtt://cam:hunter2@127.0.0.1:{port}/{TOPIC}", f"mqtt://127.0.0.1:{silent.getsockname()[1]}/{TOPIC}",
            f"mqtt://127.0.0.1:{free_port()}/{TOPIC}"]
    video = write_noise_video(tmp_path / "v.avi", 20, (64, 48))
    try:
        with caplog.at_level("INFO"):
            rep = run_camera(CameraConfig(input=str(video), output=uris, classifier=str(model_dir), threads=1,
                                          report=str(tmp_path / "report.json")))
        sub = Subscriber(port, "cam", "right-pass")
        good = MqttSink(f"mqtt://cam:right-pass@127.0.0.1:{port}/{TOPIC}").start()
        assert good.connected and good.name == f"mqtt://cam:***@127.0.0.1:{port}/{TOPIC}"
        good.write(None, {"frame": 7})
        good.close()
        wait_for(lambda: sub.frames() == [7], "the message sent with the right password")
        sub.close()
    finally:
        broker.kill()
        silent.close()
    assert rep["status"] == "ok" and rep["frames"] == 20
    for s in rep["outputs_stats"].values():
        assert (s["frames"], s["dropped_offline"], s["sent"], s["connects"]) == (20, 20, 0, 0)
    assert "refused the connection" in caplog.text and "cam:***@" in caplog.text
    assert "hunter2" not in caplog.text and "hunter2" not in (tmp_path / "report.json").read_text()
    assert "right-pass" not in caplog.text


def test_mqtt_uris_parse_and_bad_ones_are_clear_errors():
    t = parse_mqtt("mqtt://us%40er:p%3Ass@broker.local/site/cam%201")
    assert (t.host, t.port, t.topic, t.username, t.password) == ("broker.local", 1883, "site/cam 1", "us@er", "p:ss")
    assert parse_mqtt("mqtt://10.0.0.2:8883/x").port == 8883 and parse_mqtt("mqtt://h/x").username is None
    for bad, why in [("mqtt://h", "name the topic"), ("mqtt://h/", "name the topic"), ("mqtt://h/a?x=1", "topic"),
                     ("mqtt://u:hunter2@h/a/+", "wildcards"), ("mqtt://h:0/a", "port must be"),
                     ("mqtt://h:x/a", "port must be"), ("mqtt:///a", "write mqtt://HOST")]:
        with pytest.raises(EdgekitError, match=why) as e:
            parse_mqtt(bad)
        assert "hunter2" not in str(e.value)


def test_drops_show_on_the_live_page():
    """The http:// view's /stats carries each output's summary: here an MQTT sink that never connected."""
    sink = MqttSink(f"mqtt://127.0.0.1:{free_port()}/{TOPIC}")  # not started: offline
    for i in range(3):
        sink.write(None, {"frame": i})
    view = HttpViewSink("127.0.0.1", 0, outputs=[sink])
    st = view.stats()["outputs"][sink.name]
    assert (st["frames"], st["dropped"], st["dropped_offline"], st["connected"]) == (3, 3, 3, False)
    sink.close()


@needs_broker
def test_a_broker_that_stops_reading_fills_the_bounded_queue_and_writes_never_block(tmp_path):
    """mosquitto stopped (SIGSTOP) while connected: the socket's buffers fill, then at most `queue` messages
    wait in paho and every further one is dropped as "queue full" at once (a blocking write would hang this
    test). Resumed (SIGCONT): every message is accounted for, sent or dropped."""
    port = free_port()
    broker = Broker(tmp_path, port).start()
    sink = MqttSink(f"mqtt://127.0.0.1:{port}/{TOPIC}", queue=5).start()
    big = {"frame": 0, "pad": "x" * 100_000}  # 100 kB: the socket's buffers fill after a few MB
    try:
        assert sink.connected
        broker.proc.send_signal(signal.SIGSTOP)
        most_waiting = 0
        while sink.dropped_queue_full < 50 and sink.frames < 5000:
            sink.write(None, big)
            most_waiting = max(most_waiting, len(sink._waiting))
        assert sink.dropped_queue_full == 50 and most_waiting == 5
        broker.proc.send_signal(signal.SIGCONT)
        sink.close()
    finally:
        broker.proc.send_signal(signal.SIGCONT)
        broker.kill()
    s = sink.summary()
    assert s["sent"] + s["dropped"] == s["frames"] and s["sent"] >= 5 and s["waiting"] == 0
