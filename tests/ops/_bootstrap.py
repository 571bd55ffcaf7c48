"""Shared set-up for the ops checks: a cached virtualenv with pinned tools.

Every check script calls `ensure_venv()` first. If its imports are missing, it
creates `${XDG_CACHE_HOME:-~/.cache}/kurir-ops-venv`, installs
tests/ops/requirements.txt there (PyPI only), and re-executes itself with the
venv's Python, so each check stays a single command.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent.parent
REQUIREMENTS = HERE / "requirements.txt"


def venv_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(Path.home(), ".cache")
    return Path(os.environ.get("KURIR_OPS_VENV", os.path.join(cache, "kurir-ops-venv")))


def _stamp() -> str:
    return hashlib.sha256(REQUIREMENTS.read_bytes()).hexdigest()


def ensure_venv(modules: list[str]) -> None:
    """Re-exec under the ops venv unless `modules` import and the venv is current."""
    venv = venv_dir()
    py = venv / "bin" / "python"
    stamp_file = venv / ".kurir-requirements.sha256"
    inside = Path(sys.prefix).resolve() == venv.resolve()
    current = stamp_file.exists() and stamp_file.read_text().strip() == _stamp()
    if inside and current:
        return
    if not inside:
        try:
            for m in modules:
                __import__(m)
            if os.environ.get("KURIR_OPS_NO_VENV") == "1":
                return
        except ImportError:
            pass
    if not current:
        import fcntl

        venv.parent.mkdir(parents=True, exist_ok=True)
        with open(f"{venv}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # two checks started together build it once
            if not (stamp_file.exists() and stamp_file.read_text().strip() == _stamp()):
                print(f"[setup] preparing {venv} (pip install -r {REQUIREMENTS.relative_to(REPO)})",
                      file=sys.stderr)
                try:
                    if not py.exists():
                        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
                    subprocess.run([str(py), "-m", "pip", "install", "-q", "--disable-pip-version-check",
                                    "-r", str(REQUIREMENTS)], check=True)
                except (subprocess.CalledProcessError, OSError) as e:
                    print(f"FAIL  setting up {venv}: {e}\n0 passed, 1 failed")
                    sys.exit(1)
                stamp_file.write_text(_stamp() + "\n")
    if inside:
        return
    os.execv(str(py), [str(py), *sys.argv])


def promtool() -> str | None:
    """promtool from PATH, else from Debian's prometheus .deb unpacked into the cache."""
    found = shutil.which("promtool")
    if found:
        return found
    cache = venv_dir().parent / "kurir-ops-promtool"
    binary = cache / "usr/bin/promtool"
    if binary.exists():
        return str(binary)
    cache.mkdir(parents=True, exist_ok=True)
    dl = Path(tempfile.mkdtemp())
    try:
        cmd = ["apt-get", "download", "prometheus"]
        r = subprocess.run(cmd, cwd=dl, capture_output=True, text=True)
        if r.returncode != 0 and os.geteuid() == 0:
            subprocess.run(["apt-get", "update", "-qq"], capture_output=True)
            r = subprocess.run(cmd, cwd=dl, capture_output=True, text=True)
        debs = list(dl.glob("prometheus_*.deb"))
        if not debs:
            print(f"[setup] could not get promtool: {r.stderr.strip()}", file=sys.stderr)
            return None
        subprocess.run(["dpkg-deb", "-x", str(debs[0]), str(cache)], check=True)
    finally:
        shutil.rmtree(dl, ignore_errors=True)
    return str(binary) if binary.exists() else None


class Results:
    """Counts checks and prints the closing 'N passed, N failed' line."""

    def __init__(self) -> None:
        self.passed = 0
        self.failed = 0

    def ok(self, name: str) -> None:
        self.passed += 1
        print(f"ok    {name}")

    def fail(self, name: str, why: str) -> None:
        self.failed += 1
        print(f"FAIL  {name}\n      " + why.rstrip().replace("\n", "\n      "))

    def check(self, name: str, errors: list[str] | str | None) -> None:
        if isinstance(errors, str):
            errors = [errors]
        if errors:
            self.fail(name, "\n".join(errors))
        else:
            self.ok(name)

    def finish(self) -> int:
        print(f"{self.passed} passed, {self.failed} failed")
        return 1 if self.failed or not self.passed else 0
