"""MONAI Label: a real ``monailabel start_server`` runs ``label_app`` and serves and trains the bundles.

The server runs from the label environment (``.venv-label/`` beside the repository, or
``MONAI_DANIL_LABEL_VENV``; ``scripts/setup_label_venv.sh`` creates it, CI runs that first), as a
subprocess on a free loopback port, over a studies folder of real images copied from the shared
data. Its environment points every HTTP(S) proxy at a closed loopback port, so any attempt to reach
the network fails: the app must need none. Without the label environment the tests are skipped
locally and fail under ``CI=true``, like the data tests.

``test_server_serves_and_trains_the_three_bundles`` does over HTTP what a user does: info, labels,
inference with each model, one epoch of training and the inference after it, and the bad requests.
``test_docs_walkthrough_runs_as_written`` runs every command of docs/monailabel.md against its own
server, on another port.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from conftest import REPO_ROOT

pytestmark = [pytest.mark.data, pytest.mark.slow]

VENV_VARIABLE = "MONAI_DANIL_LABEL_VENV"
TASKS = ("skin", "retina", "pathology")
DOC = REPO_ROOT / "docs" / "monailabel.md"
START_TIMEOUT_S = 300
TRAIN_TIMEOUT_S = 600
# a closed port: a request through it fails at once
NO_NETWORK = "http://127.0.0.1:9"


def _label_venv() -> Path:
    venv = Path(os.environ.get(VENV_VARIABLE, REPO_ROOT / ".venv-label")).resolve()
    if not (venv / "bin" / "monailabel").is_file():
        message = (
            f"no MONAI Label environment at {venv}: create it with `bash scripts/setup_label_venv.sh` "
            f"(or point {VENV_VARIABLE} at one)"
        )
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    return venv


@pytest.fixture(scope="module")
def label_venv() -> Path:
    return _label_venv()


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _server_env(venv: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PATH=f"{venv / 'bin'}{os.pathsep}{env.get('PATH', '')}",
        VIRTUAL_ENV=str(venv),
        # this checkout's monai_danil, whichever checkout the environment was installed from
        PYTHONPATH=str(REPO_ROOT),
        PYTHONUNBUFFERED="1",
        **{name: NO_NETWORK for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy")},
        **{name: "127.0.0.1,localhost" for name in ("NO_PROXY", "no_proxy")},
    )
    env.update(extra or {})
    return env


def _log_tail(log: Path, chars: int = 6000) -> str:
    return log.read_text(errors="replace")[-chars:] if log.is_file() else "(no log)"


@contextlib.contextmanager
def _server(argv: list[str], cwd: Path, env: dict[str, str], url: str, log: Path) -> Iterator[subprocess.Popen]:
    """Starts ``argv`` (a ``monailabel start_server`` command), waits until ``url/info/`` answers, and
    stops it and every process it started (its training subprocesses) at the end, whatever happened."""
    with open(log, "w") as out:
        process = subprocess.Popen(argv, cwd=cwd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                pytest.fail(f"{' '.join(argv)} exited with {process.returncode}:\n{_log_tail(log)}")
            try:
                with urllib.request.urlopen(f"{url}/info/", timeout=10) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                pytest.fail(f"the server did not answer within {START_TIMEOUT_S} s:\n{_log_tail(log)}")
            time.sleep(1)
        yield process
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=30)


class Client:
    """The few HTTP calls of MONAI Label's API the tests make; every answer is ``(status, JSON or text)``."""

    def __init__(self, url: str) -> None:
        self.url = url

    def request(self, method: str, path: str, body: bytes | None = None, headers: dict | None = None):
        req = urllib.request.Request(f"{self.url}{path}", data=body, method=method, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=300) as response:
                status, text = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, text = error.code, error.read().decode()
        try:
            return status, json.loads(text)
        except json.JSONDecodeError:
            return status, text

    def upload(self, method: str, path: str, field: str, filename: str, content: bytes):
        boundary = uuid.uuid4().hex
        body = (
            f'--{boundary}\r\nContent-Disposition: form-data; name="{field}"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n"
        ).encode() + content + f"\r\n--{boundary}--\r\n".encode()
        return self.request(method, path, body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})

    def label(self, image: str, value) -> tuple:
        content = json.dumps({"label": value}).encode()
        path = f"/datastore/label?image={urllib.parse.quote(image)}&tag=final"
        return self.upload("PUT", path, "label", "label.json", content)

    def infer(self, model: str, image: str) -> tuple:
        return self.request("POST", f"/infer/{model}?image={urllib.parse.quote(image)}")

    def train(self, model: str, params: dict) -> tuple:
        headers = {"Content-Type": "application/json"}
        return self.request("POST", f"/train/{model}", json.dumps(params).encode(), headers)

    def wait_for_training(self) -> dict:
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            status, task = self.request("GET", "/train/")
            if status == 200 and task["status"] not in ("SUBMITTED", "RUNNING"):
                return task
            time.sleep(2)
        pytest.fail(f"training did not finish within {TRAIN_TIMEOUT_S} s: {task}")


def _class_names(task: str) -> list[str]:
    meta = json.loads((REPO_ROOT / "bundles" / task / "configs" / "metadata.json").read_text())
    channels = meta["network_data_format"]["outputs"]["pred"]["channel_def"]
    return [channels[str(i)] for i in range(len(channels))]


def _images_per_class(task_dir: Path, per_class: int) -> list[tuple[Path, int]]:
    """The first ``per_class`` training images of each class of a task's manifest, as (path, class index)."""
    names = _class_names(task_dir.name)
    picked: dict[int, list[Path]] = {}
    with open(task_dir / "manifest.csv", newline="") as handle:
        for row in csv.DictReader(handle):
            label = names.index(row["label"]) if row["label"] in names else int(row["label"])
            if row["split"] == "train" and len(picked.setdefault(label, [])) < per_class:
                picked[label].append(task_dir / row["relative_path"])
    assert sorted(picked) == list(range(len(names))), f"{task_dir}: not every class has training images"
    return [(path, label) for label in sorted(picked) for path in picked[label]]


def _snapshot(root: Path) -> dict[str, tuple[int, int]]:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in files}


def _check_prediction(answer: dict, names: list[str]) -> list[float]:
    prediction = answer["prediction"]
    assert [(p["idx"], p["label"]) for p in prediction] == list(enumerate(names))
    scores = [p["score"] for p in prediction]
    assert all(0.0 <= s <= 1.0 for s in scores) and abs(sum(scores) - 1.0) < 1e-4, scores
    assert answer["label_names"] == {name: i for i, name in enumerate(names)}
    return scores


def test_server_serves_and_trains_the_three_bundles(label_venv, data_root, tmp_path):
    bundles_before = _snapshot(REPO_ROOT / "bundles")
    studies = tmp_path / "studies"
    studies.mkdir()
    # one datastore for the three tasks: the files share names (train_0000.png), so copies are named apart
    images: dict[str, list[tuple[str, int]]] = {}
    for task, per_class in (("skin", 1), ("retina", 1), ("pathology", 2)):
        images[task] = []
        for path, label in _images_per_class(data_root / task, per_class):
            image_id = f"{task}_{path.stem}"
            shutil.copy(path, studies / f"{image_id}{path.suffix}")
            images[task].append((image_id, label))
    # an extension beyond MONAI Label's defaults, admitted by MONAI_LABEL_DATASTORE_FILE_EXT
    skin_jpeg = "skin_as_jpeg"
    shutil.copy(studies / f"{images['skin'][0][0]}.jpg", studies / f"{skin_jpeg}.jpeg")
    (studies / "corrupt.png").write_text("not an image\n")

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    argv = [str(label_venv / "bin" / "monailabel"), "start_server", "--app", str(REPO_ROOT / "label_app"),
            "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port)]
    env = _server_env(label_venv, {"MONAI_LABEL_DATASTORE_FILE_EXT": '["*.png", "*.jpg", "*.jpeg"]'})
    started = time.monotonic()
    with _server(argv, tmp_path, env, url, tmp_path / "server.log"):
        client = Client(url)
        start_s = time.monotonic() - started

        status, info = client.request("GET", "/info/")
        assert status == 200
        assert set(info["models"]) == set(TASKS) and set(info["trainers"]) == set(TASKS)
        for task in TASKS:
            model = info["models"][task]
            assert model["type"] == "classification"
            assert model["labels"] == {name: i for i, name in enumerate(_class_names(task))}
            assert model["trained"] is False and model["description"].startswith("UNTRAINED")
        assert "background" in info["models"]["pathology"]["labels"] and "no DR" in info["models"]["retina"]["labels"]

        for task in TASKS:
            status, answer = client.infer(task, images[task][0][0])
            assert status == 200, answer
            _check_prediction(answer, _class_names(task))
        status, answer = client.infer("skin", skin_jpeg)
        assert status == 200, answer

        # labels for the pathology images, as class names, indices and one of the bundle's aliases
        names = _class_names("pathology")
        for n, (image_id, label) in enumerate(images["pathology"]):
            value = (names[label], label, str(label))[n % 3] if names[label] != "background" else "BACK"
            status, answer = client.label(image_id, value)
            assert status == 200 and answer["label"] == image_id, answer

        # the bad requests, each answered with what is wrong
        status, answer = client.infer("dermoscopy", images["skin"][0][0])
        assert status == 404 and "'dermoscopy'" in answer["detail"] and "skin, retina, pathology" in answer["detail"]
        status, answer = client.train("dermoscopy", {"max_epochs": 1})
        assert status == 404 and "'dermoscopy'" in answer["detail"]
        status, answer = client.infer("skin", "no_such_image")
        assert status == 404 and "'no_such_image'" in answer["detail"]
        status, answer = client.label("no_such_image", "mel")
        assert status == 404 and "'no_such_image'" in answer["detail"]
        unlabelled = images["skin"][1][0]
        status, answer = client.label(unlabelled, "melanomaX")
        assert status == 422 and "'melanomaX'" in answer["detail"], answer
        assert all(f"'{name}'" in answer["detail"] for name in ("mel", "no DR", "background")), answer
        status, answer = client.label(unlabelled, 9)
        assert status == 422 and "9" in answer["detail"]
        path = f"/datastore/label?image={unlabelled}&tag=final"
        status, answer = client.upload("PUT", path, "label", "label.json", b"mel")
        assert status == 422 and "not JSON" in answer["detail"]
        status, answer = client.request("GET", f"/datastore/label?label={unlabelled}&tag=final")
        assert status == 404, "a rejected label was stored"
        status, answer = client.upload("PUT", "/datastore/image?image=notes", "file", "notes.txt", b"no pixels\n")
        assert status == 415 and ".txt" in answer["detail"] and "MONAI_LABEL_DATASTORE_FILE_EXT" in answer["detail"]
        status, answer = client.infer("skin", "corrupt")
        assert status == 422 and "corrupt.png" in answer["detail"] and "cannot read it as an image" in answer["detail"]
        # MONAI Label's own endpoint, before the app is asked: documented in docs/monailabel.md
        status, answer = client.request("POST", "/infer/skin")
        assert status == 500 and "Neither Image nor File" in answer["detail"]

        probe = images["pathology"][0][0]
        copies = studies / "model"
        served = _snapshot(copies)
        status, answer = client.infer("pathology", probe)
        before = _check_prediction(answer, names)
        assert _check_prediction(client.infer("pathology", probe)[1], names) == before
        assert _snapshot(copies) == served, "an inference request wrote into the app's bundle copies"

        started = time.monotonic()
        status, task = client.train("pathology", {"max_epochs": 1})
        assert status == 200 and task["status"] in ("SUBMITTED", "RUNNING"), task
        task = client.wait_for_training()
        train_s = time.monotonic() - started
        assert task["status"] == "DONE", f"{task}\n{_log_tail(tmp_path / 'server.log')}"
        assert any("Epoch: 1/1" in line for line in task["details"]), task["details"]
        models = copies / "pathology" / "models"
        assert (models / "checkpoint.pt").is_file()
        assert _snapshot(models)["model.pt"] != served["pathology/models/model.pt"], "training left model.pt as it was"

        status, info = client.request("GET", "/info/")
        assert info["models"]["pathology"]["trained"] is True
        assert not info["models"]["pathology"]["description"].startswith("UNTRAINED")
        assert info["models"]["skin"]["trained"] is False
        status, answer = client.infer("pathology", probe)
        after = _check_prediction(answer, names)
        assert max(abs(a - b) for a, b in zip(after, before)) > 1e-4, "the next inference used the old weights"

    assert _snapshot(REPO_ROOT / "bundles") == bundles_before, "the server wrote into the repository's bundles/"
    print(f"server start {start_s:.0f} s, one-epoch training request {train_s:.0f} s")


def _bash_blocks(text: str) -> list[str]:
    return re.findall(r"```bash\n(.*?)```", text, flags=re.S)


def test_docs_walkthrough_runs_as_written(label_venv, data_root, tmp_path):
    """docs/monailabel.md: the install command is the one CI runs; the start command starts the
    server; every other ``bash`` block runs, in order, from the repository root, as written (only the
    port is a free one instead of 8000)."""
    install, start, *steps = _bash_blocks(DOC.read_text())
    assert install.strip().splitlines()[0] == "bash scripts/setup_label_venv.sh"
    assert "bash scripts/setup_label_venv.sh" in (REPO_ROOT / ".ci" / "run").read_text()
    assert install.strip().splitlines()[1] == "source .venv-label/bin/activate"
    (start_line,) = [line for line in start.strip().splitlines() if not line.startswith(("#", "mkdir"))]
    argv = shlex.split(start_line)
    assert argv[:2] == ["monailabel", "start_server"] and "8000" in argv, start_line
    assert steps, f"{DOC} has no client commands"

    # the repository as the doc sees it: its folders, with the shared data beside it
    repo = tmp_path / "repo"
    repo.mkdir()
    for name in ("label_app", "bundles", "scripts"):
        (repo / name).symlink_to(REPO_ROOT / name)
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "data").symlink_to(data_root)
    port = str(_free_port())
    env = _server_env(label_venv)
    for line in start.strip().splitlines():
        if line.startswith("mkdir"):
            subprocess.run(shlex.split(line), cwd=repo, check=True)
    argv = [str(label_venv / "bin" / "monailabel"), *[port if a == "8000" else a for a in argv[1:]]]
    with _server(argv, repo, env, f"http://127.0.0.1:{port}", tmp_path / "server.log"):
        script = "\n".join(steps).replace("127.0.0.1:8000", f"127.0.0.1:{port}")
        result = subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=repo, env=env, capture_output=True,
                                text=True, timeout=TRAIN_TIMEOUT_S + 300)
        output = f"{result.stdout[-4000:]}\n{result.stderr[-4000:]}\n{_log_tail(tmp_path / 'server.log')}"
        assert result.returncode == 0, output
    assert '"status":"DONE"' in result.stdout, result.stdout[-4000:]
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    _check_prediction(answer, _class_names("skin"))


def test_readme_test_command_is_the_ci_command_and_installs_the_label_environment():
    command = (REPO_ROOT / ".ci" / "run").read_text().strip().splitlines()[-1]
    assert f"\n    {command}\n" in (REPO_ROOT / "README.md").read_text()
    assert "bash scripts/setup_label_venv.sh" in command.split("&&")[2]
