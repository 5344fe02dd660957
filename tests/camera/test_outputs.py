"""Output URIs: one registry decides what each output is; anything it does not know (a scheme not supported
yet, an unknown one, a typo) is one line and exit 2 with nothing written, never a folder of that name. `-`
carries the result records on stdout, one JSON line per frame, with the logs and the summary on stderr."""
from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from edgekit.camera.outputs import StdoutSink, check_outputs, open_output, parse_output
from edgekit.errors import EdgekitError
from repo_files import write_noise_video

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("uri, kind, target", [
    ("display://0", "display", "display://0"),
    ("out.mp4", "video", "out.mp4"), ("runs/a.AVI", "video", "runs/a.AVI"),
    ("r.jsonl", "jsonl", "r.jsonl"), ("r.ndjson", "jsonl", "r.ndjson"),
    ("frames/", "images", "frames/"),
    ("-", "stdout", "-"),
    ("http://127.0.0.1:8080", "http", "127.0.0.1:8080"), ("http://0.0.0.0:9000/", "http", "0.0.0.0:9000"),
    ("http://:8081", "http", "127.0.0.1:8081"), ("http://@:8082", "http", "127.0.0.1:8082"),
    ("http://localhost", "http", "localhost:8080"),
    ("mqtt://broker/edgekit/cam1", "mqtt", "mqtt://broker/edgekit/cam1"),
    ("rtsp://@:8554/live", "rtsp", "rtsp://@:8554/live"), ("rtp://192.168.1.5:5000", "rtp", "rtp://192.168.1.5:5000"),
])
def test_each_supported_output_is_recognised(uri, kind, target):
    spec = parse_output(uri)
    assert (spec.kind, spec.target) == (kind, target)


def test_an_existing_folder_is_an_image_output_and_a_new_name_needs_a_slash(tmp_path):
    (tmp_path / "frames").mkdir()
    assert parse_output(str(tmp_path / "frames")).kind == "images"
    with pytest.raises(EdgekitError, match="not an existing folder: end it with '/'"):
        parse_output(str(tmp_path / "new_frames"))
    assert not (tmp_path / "new_frames").exists()


def test_http_binds_localhost_unless_told_otherwise():
    assert parse_output("http://:8080").host == "127.0.0.1"
    assert parse_output("http://@:8080").host == "127.0.0.1"
    assert parse_output("http://0.0.0.0:8080").host == "0.0.0.0"


BAD = {  # output -> what the one-line error must say
    "rtsp://admin:hunter2@cam/live": "write rtsp://@:8554/NAME",
    "rtsp://@:8554": "write rtsp://@:8554/NAME",
    "rtp://192.168.1.5": "write rtp://HOST:PORT",
    "webrtc://@:8554/output": "WebRTC output is not supported yet",
    "mqtt://broker:1883": "name the topic to publish to",
    "mqtt://user:hunter2@broker/a/#": "'+' and '#' are wildcards",
    "https://0.0.0.0:8443": "plain HTTP",
    "foo://bar": "unknown scheme 'foo://'",
    "file:///tmp/x": "unknown scheme 'file://'",
    "rtsp:/typo": "write rtsp://@:8554/NAME (serve) or rtp://HOST:PORT",
    "mqtt:broker": "write mqtt://HOST[:PORT]/TOPIC",
    "frames": "not an existing folder",
    "out.xyz": "unknown extension '.xyz'",
    "http://127.0.0.1:8080/live": "served at the root",
    "http://127.0.0.1:99999": "port must be",
}


@pytest.mark.parametrize("uri", sorted(BAD))
def test_unsupported_outputs_are_clear_errors(uri):
    with pytest.raises(EdgekitError) as e:
        parse_output(uri)
    msg = str(e.value)
    assert BAD[uri] in msg and "hunter2" not in msg
    if "unknown" in BAD[uri] or "existing folder" in BAD[uri]:  # the supported ones are named
        assert "http://127.0.0.1:8080" in msg and "- (JSON lines on stdout)" in msg and ".jsonl" in msg


def test_duplicates_that_cannot_work_are_rejected():
    with pytest.raises(EdgekitError, match="'-' given twice"):
        check_outputs(["-", "r.jsonl", "-"])
    with pytest.raises(EdgekitError, match="same port"):
        check_outputs(["http://:8080", "http://0.0.0.0:8080"])
    with pytest.raises(EdgekitError, match="same port"):
        check_outputs(["rtsp://@:8554/a", "rtsp://@:8554/b"])


def test_cli_rejects_every_unsupported_output_with_exit_2_one_line_and_nothing_on_disk(tmp_path):
    """Run from an empty folder, each bad output given after a good one: exit 2, one line on stderr, and the
    folder stays empty (no folder named after the URI, no half-written results of the good output). The
    outputs are checked before the input or the models are opened, so neither needs to exist."""
    work = tmp_path / "cwd"
    work.mkdir()
    model = tmp_path / "empty_model"  # an existing folder (checked as options are read), never opened
    model.mkdir()
    code = ("import sys; from edgekit.cli import main\n"
            "for uri in sys.argv[1:]:\n"
            f"    rc = main(['camera', 'clip.mp4', 'r.jsonl', uri, '--classifier', {str(model)!r}])\n"
            "    print(rc, file=sys.stderr)\n")
    r = subprocess.run([sys.executable, "-c", code, *sorted(BAD)], capture_output=True, text=True, cwd=work,
                       timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    lines = r.stderr.splitlines()
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert len(lines) == 2 * len(BAD), lines  # per URI: the error line, then the exit code
    for uri, err, rc in zip(sorted(BAD), lines[::2], lines[1::2]):
        assert rc == "2" and err.startswith("edgekit: error: output '") and BAD[uri] in err, (uri, err)
    assert list(work.iterdir()) == []


def test_stdout_sink_writes_one_flushed_line_per_record_and_stops_when_the_reader_leaves():
    class Stream(io.StringIO):
        flushes = 0

        def flush(self):
            Stream.flushes += 1

    s = Stream()
    sink = StdoutSink(s)
    for i in range(3):
        sink.write(None, {"frame": i, "objects": []})
    assert [json.loads(x)["frame"] for x in s.getvalue().splitlines()] == [0, 1, 2] and Stream.flushes == 3

    class Gone(io.StringIO):
        def write(self, text):
            raise BrokenPipeError(32, "Broken pipe")

    sink = StdoutSink(Gone())
    sink.write(None, {"frame": 0, "objects": []})
    assert sink.stop_requested  # the loop ends cleanly
    sink.write(None, {"frame": 1, "objects": []})  # and a late write does not raise


def test_open_output_opens_the_file_kinds(tmp_path):
    sink = open_output(str(tmp_path / "r.jsonl"), 10)
    sink.write(None, {"frame": 0, "objects": []})
    sink.close()
    assert json.loads((tmp_path / "r.jsonl").read_text()) == {"frame": 0, "objects": []}
    assert isinstance(open_output("-", 10), StdoutSink)


def test_dash_pipes_json_lines_into_another_program(model_dir, tmp_path):
    """`edgekit camera VIDEO - ...` piped into `python -c`, which parses every line: one record per frame, in
    order, nothing else on stdout; the summary and logs are on stderr."""

    video = write_noise_video(tmp_path / "v.avi", 15, (64, 48))
    reader = ("import json, sys\n"
              "rows = [json.loads(line) for line in sys.stdin]\n"
              "assert [r['frame'] for r in rows] == list(range(len(rows))), 'frames out of order'\n"
              "assert all(r['schema_version'] == 1 and r['objects'] for r in rows)\n"
              "print(len(rows))\n")
    cam = subprocess.Popen([sys.executable, "-m", "edgekit", "camera", str(video), "-", "--classifier",
                            str(model_dir), "--threads", "1"], cwd=REPO, stdout=subprocess.PIPE,
                           stderr=subprocess.PIPE)
    read = subprocess.run([sys.executable, "-c", reader], stdin=cam.stdout, capture_output=True, text=True,
                          timeout=120)
    cam.stdout.close()
    err = cam.stderr.read().decode()
    assert cam.wait(timeout=60) == 0, err[-2000:]
    assert read.returncode == 0, read.stderr[-2000:]
    assert read.stdout.strip() == "15"
    assert "15 frames from" in err  # the summary went to stderr, not into the pipe
