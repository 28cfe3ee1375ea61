"""Queue an API-format workflow on a running ComfyUI server and wait for its result.

The files in workflows/api/ are the /prompt bodies of the shipped workflows. A studio runs the pack on
many machines by sending such a body to each ComfyUI server (behind any job queue) and waiting for the
prompt's history entry, which is what this script does with the standard library only:

    python tools/run_workflow.py workflows/api/controlnet_txt2img.json --server http://gpu-07:8188 \\
        --upload my_photo.png --set 4.image=my_photo.png --set 2.text="a red barn" --download out/

``--set NODE.INPUT=VALUE`` changes one input (VALUE read as JSON when it parses, else as text);
``--upload`` sends a file to the server's input folder first; ``--download`` saves the output images.
Exit status 0 when the prompt ran, 1 when the server refused it or a node failed (ComfyUI's message
is printed).
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path


class WorkflowError(RuntimeError):
    """The server refused the prompt, a node failed, or no result came in time."""


def _request(url: str, data: bytes | None = None, headers=None, timeout: float = 30.0) -> bytes:
    request = urllib.request.Request(url, data=data, headers=headers or {}, method="POST" if data else "GET")
    with urllib.request.urlopen(request, timeout=timeout) as response:
        return response.read()


def queue_prompt(server: str, prompt: dict, client_id: str | None = None) -> str:
    """POST ``prompt`` to ``/prompt``; returns its prompt id.

    Raises:
        WorkflowError: the server refused it (validation), with ComfyUI's node errors.
    """
    body = json.dumps({"prompt": prompt, "client_id": client_id or uuid.uuid4().hex}).encode()
    try:
        answer = _request(f"{server}/prompt", body, {"Content-Type": "application/json"})
    except urllib.error.HTTPError as error:
        raise WorkflowError(f"the server refused the prompt: {error.read().decode(errors='replace')}") from None
    return json.loads(answer)["prompt_id"]


def wait_for_result(server: str, prompt_id: str, timeout: float = 3600.0, poll: float = 0.5) -> dict:
    """The prompt's ``/history`` entry once it has run (``outputs`` per node id, ``status``).

    Raises:
        WorkflowError: a node failed (ComfyUI's error message) or ``timeout`` seconds passed.
    """
    deadline = time.time() + timeout
    while time.time() < deadline:
        history = json.loads(_request(f"{server}/history/{prompt_id}"))
        if prompt_id in history:
            entry = history[prompt_id]
            status = entry.get("status") or {}
            if status.get("status_str", "success") != "success":
                errors = [m for m in status.get("messages", []) if m[0] == "execution_error"]
                raise WorkflowError(f"prompt {prompt_id} failed: {json.dumps(errors)[:4000]}")
            return entry
        time.sleep(poll)
    raise WorkflowError(f"prompt {prompt_id} gave no result within {timeout} s")


def run(server: str, prompt: dict, timeout: float = 3600.0) -> dict:
    """Queue ``prompt`` and wait for it; returns its history entry."""
    return wait_for_result(server, queue_prompt(server, prompt), timeout)


def output_images(entry: dict) -> list:
    """The ``{"filename", "subfolder", "type"}`` of every image the prompt's nodes output."""
    return [image for output in entry["outputs"].values() for image in output.get("images", [])]


def set_input(prompt: dict, assignment: str) -> None:
    """Applies ``NODE.INPUT=VALUE`` to ``prompt`` in place."""
    target, _, raw = assignment.partition("=")
    node_id, _, name = target.partition(".")
    if "=" not in assignment or not name or node_id not in prompt:
        raise SystemExit(f"--set {assignment!r}: expected NODE.INPUT=VALUE with a node id of this workflow")
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        value = raw
    prompt[node_id]["inputs"][name] = value


def upload(server: str, path: Path) -> str:
    """Sends ``path`` to the server's input folder (``/upload/image``); returns the name it is stored under."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"image\"; filename=\"{path.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n")
    tail = (f"\r\n--{boundary}\r\nContent-Disposition: form-data; name=\"overwrite\"\r\n\r\ntrue\r\n"
            f"--{boundary}--\r\n")
    body = head.encode() + path.read_bytes() + tail.encode()
    answer = _request(f"{server}/upload/image", body, {"Content-Type": f"multipart/form-data; boundary={boundary}"})
    return json.loads(answer)["name"]


def download(server: str, image: dict, folder: Path) -> Path:
    query = urllib.parse.urlencode({k: image[k] for k in ("filename", "subfolder", "type")})
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / image["filename"]
    path.write_bytes(_request(f"{server}/view?{query}", timeout=120))
    return path


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("workflow", type=Path, help="API-format workflow (a /prompt body), e.g. workflows/api/*.json")
    parser.add_argument("--server", default="http://127.0.0.1:8188", help="ComfyUI's address")
    parser.add_argument("--set", action="append", default=[], metavar="NODE.INPUT=VALUE", help="change one input")
    parser.add_argument("--upload", action="append", default=[], type=Path, metavar="FILE",
                        help="send a file to the server's input folder before queueing")
    parser.add_argument("--download", type=Path, metavar="DIR", help="save the output images here")
    parser.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait for the result")
    args = parser.parse_args(argv)
    server = args.server.rstrip("/")
    prompt = json.loads(args.workflow.read_text())
    for assignment in args.set:
        set_input(prompt, assignment)
    for path in args.upload:
        print(f"uploaded {path} as {upload(server, path)}")
    try:
        entry = run(server, prompt, args.timeout)
    except WorkflowError as error:
        print(error, file=sys.stderr)
        return 1
    for image in output_images(entry):
        if image.get("type") == "output":
            saved = download(server, image, args.download) if args.download else None
            print(f"output {image['subfolder']}/{image['filename']}" + (f" -> {saved}" if saved else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
