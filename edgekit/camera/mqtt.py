"""`mqtt://[USER:PASS@]HOST[:PORT]/TOPIC`: each frame's result record (records.py, the same JSON as a .jsonl
line) published to TOPIC, one message per frame, QoS 0, with paho-mqtt (the `mqtt` extra).

The broker never slows or stops the loop. paho's network thread connects, reconnects with exponential backoff
(`min_delay` doubling up to `max_delay` seconds) and writes; the loop's write() only hands a message to it.
A message is dropped, and counted, rather than waited for or queued without bound:
- `dropped_offline`: the broker is away (down at start, gone mid-run, refusing us);
- `dropped_queue_full`: `queue` messages are already waiting to be written (a slow broker or network);
- `dropped_in_flight`: handed to paho but never written, because the connection went while they waited.
A message written to the socket counts as `sent`; with QoS 0 nobody tells us whether it arrived, so one
written just before a broker died is lost without being counted (a few at most: see the tests).
The counts are in the run's report (`outputs_stats`) and on the live page's /stats.

Credentials in the URI are used to log in and never logged: the sink's name and every message about it carry
the URI with the password replaced by *** (sources.redact)."""
from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import numpy as np

from edgekit.camera.sinks import Overlay, Sink
from edgekit.camera.sources import RepeatLog, redact
from edgekit.errors import EdgekitError

log = logging.getLogger(__name__)
DEFAULT_PORT = 1883
EXAMPLE = "mqtt://127.0.0.1:1883/edgekit/camera"


@dataclass(frozen=True)
class MqttTarget:
    host: str
    port: int
    topic: str
    username: str | None = None
    password: str | None = None


def parse_mqtt(uri: str) -> MqttTarget:
    """mqtt://[USER[:PASS]@]HOST[:PORT]/TOPIC -> its parts (user and password percent-decoded); EdgekitError
    naming the form for anything else. The message never holds the password."""
    parts = urlsplit(uri)
    shown = redact(uri)
    try:
        port = parts.port
    except ValueError:
        port = -1
    if parts.scheme.lower() != "mqtt" or not parts.hostname:
        raise EdgekitError(f"output '{shown}': write mqtt://HOST[:PORT]/TOPIC, e.g. {EXAMPLE}")
    if port is not None and not 1 <= port <= 65535:
        raise EdgekitError(f"output '{shown}': the port must be a number from 1 to 65535, e.g. {EXAMPLE}")
    topic = unquote(parts.path[1:])
    if "+" in topic or "#" in uri:  # '#' would reach urlsplit as a fragment
        raise EdgekitError(f"output '{shown}': '+' and '#' are wildcards for subscribers; publish to a plain "
                           f"topic, e.g. {EXAMPLE}")
    if not topic or parts.query:
        raise EdgekitError(f"output '{shown}': name the topic to publish to after the host, e.g. {EXAMPLE}")
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return MqttTarget(parts.hostname, port or DEFAULT_PORT, topic, user, password)


def _paho():
    try:
        import paho.mqtt.client as mqtt
    except ImportError:
        raise EdgekitError("mqtt:// outputs need paho-mqtt: pip install 'edgekit[mqtt]' (or pip install "
                           "paho-mqtt), or use - (JSON lines on stdout) piped to mosquitto_pub -l") from None
    return mqtt


class MqttSink(Sink):
    """One message per frame to an MQTT broker; see the module's docstring for what is dropped and when."""

    wants_frames = False

    def __init__(self, uri: str, *, queue: int = 100, min_delay: float = 0.5, max_delay: float = 30.0,
                 keepalive: int = 30, close_timeout: float = 3.0) -> None:
        if queue < 1:
            raise EdgekitError(f"MQTT queue of {queue}: allow at least 1 message")
        self.target = parse_mqtt(uri)
        self.name = redact(uri)
        self.queue, self.close_timeout = queue, close_timeout
        self.frames = self.sent = self.dropped_offline = self.dropped_queue_full = self.dropped_in_flight = 0
        self.connects = self.disconnects = 0
        self.connected = False  # set by paho's thread (on_connect / on_disconnect)
        self._first_answer = threading.Event()  # the first connect attempt succeeded, was refused or failed
        self._waiting: deque = deque()  # MQTTMessageInfo of messages handed to paho, oldest first, not yet swept
        self._offline = RepeatLog(log, every=1000, seconds=30.0)
        self._client = self._make_client(keepalive, min_delay, max_delay)

    def _make_client(self, keepalive: int, min_delay: float, max_delay: float):
        mqtt = _paho()
        t = self.target
        client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=f"edgekit-{os.getpid()}-{id(self):x}",
                             clean_session=True)
        if t.username is not None:
            client.username_pw_set(t.username, t.password)
        client.reconnect_delay_set(min_delay=min_delay, max_delay=max_delay)
        client.connect_timeout = 2.0  # a connect to a silent host ends soon; close() waits for it at most
        client.on_connect, client.on_disconnect = self._on_connect, self._on_disconnect
        client.on_connect_fail = self._on_connect_fail
        self._keepalive = keepalive
        return client

    # ---- lifecycle ------------------------------------------------------------------------------------------
    def start(self, wait: float = 2.0) -> "MqttSink":
        """Connect in the background, before the first frame: wait up to `wait` seconds for the first answer (a
        broker that is up gets every frame from the first; a refused connection ends the wait at once), then
        go on either way: a broker that is down is retried with backoff while the loop runs."""
        t = self.target
        self._client.connect_async(t.host, t.port, keepalive=self._keepalive)
        self._client.loop_start()
        self._first_answer.wait(wait)
        if not self.connected:
            log.warning("MQTT: %s is not reachable yet: dropping messages until it is; retrying in the background",
                        self.name)
        return self

    def close(self) -> None:
        """Let the messages already handed over be written (up to `close_timeout`), disconnect, and stop the
        network thread. Bounded: a broker that stopped reading cannot hold the run's end."""
        if self._client is None:
            return
        client, self._client = self._client, None
        deadline = time.monotonic() + self.close_timeout
        while self.connected and self._sweep() and time.monotonic() < deadline:
            time.sleep(0.01)
        client.disconnect()
        stopper = threading.Thread(target=client.loop_stop, name="edgekit-mqtt-stop", daemon=True)
        stopper.start()
        stopper.join(max(1.0, deadline - time.monotonic()))
        if stopper.is_alive():
            log.warning("MQTT: %s did not close in %.0f s; leaving it", self.name, self.close_timeout)
        self._sweep()
        self.dropped_in_flight += len(self._waiting)  # never written
        self._waiting.clear()
        log.info("MQTT: %s", self.summary_line())

    # ---- the loop's side ------------------------------------------------------------------------------------
    def write(self, frame: np.ndarray, result: dict[str, Any], overlay: Overlay | None = None) -> None:
        self.frames += 1
        if not self.connected or self._client is None:
            self.dropped_offline += 1
            return
        if self._sweep() >= self.queue:
            self.dropped_queue_full += 1
            return
        payload = json.dumps(result, separators=(",", ":"))
        info = self._client.publish(self.target.topic, payload, qos=0)
        if info.rc == 0:
            self._waiting.append(info)
        else:  # the connection went between the check and the publish
            self.dropped_offline += 1

    def _sweep(self) -> int:
        """Count the messages paho is done with (written, or given up when the connection went; it marks those
        published with an error); return how many still wait to be written. Loop thread only."""
        w = self._waiting
        while w and w[0].is_published():
            if w.popleft().rc == 0:
                self.sent += 1
            else:
                self.dropped_in_flight += 1
        return len(w)

    # ---- paho's thread --------------------------------------------------------------------------------------
    def _on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        if reason_code.is_failure:
            self._offline.warning("MQTT: %s refused the connection (%s): dropping messages; retrying", self.name,
                                  reason_code)
            self._first_answer.set()
            return
        self.connects += 1
        self.connected = True
        self._first_answer.set()
        log.info("MQTT: connected to %s, publishing each frame's record%s", self.name,
                 " again" if self.connects > 1 else "")

    def _on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        was = self.connected
        self.connected = False
        if was and self._client is not None:  # lost, not our own disconnect at close
            self.disconnects += 1
            log.warning("MQTT: lost the broker at %s (%s): dropping messages until it is back; reconnecting",
                        self.name, reason_code)

    def _on_connect_fail(self, client, userdata) -> None:
        self._first_answer.set()
        self._offline.warning("MQTT: cannot reach %s: dropping messages; retrying with backoff", self.name)

    # ---- numbers --------------------------------------------------------------------------------------------
    @property
    def dropped(self) -> int:
        return self.dropped_offline + self.dropped_queue_full + self.dropped_in_flight

    def summary(self) -> dict[str, Any]:
        """Counts for the report and the live page (read from any thread: each is one int)."""
        return {"frames": self.frames, "sent": self.sent, "dropped": self.dropped,
                "dropped_offline": self.dropped_offline, "dropped_queue_full": self.dropped_queue_full,
                "dropped_in_flight": self.dropped_in_flight, "waiting": len(self._waiting), "queue": self.queue,
                "connected": self.connected, "connects": self.connects, "disconnects": self.disconnects}

    def summary_line(self) -> str:
        s = self.summary()
        return (f"{s['sent']} of {s['frames']} messages sent, {s['dropped']} dropped (broker away "
                f"{s['dropped_offline']}, queue full {s['dropped_queue_full']}, lost with the connection "
                f"{s['dropped_in_flight']}); {s['connects']} connects, {s['disconnects']} disconnects")
