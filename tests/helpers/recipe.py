"""Run a doc's ```sh blocks verbatim: the doc's variables, then the test's overrides, daemons in the background.

Used by the recipe tests (tests/integration/test_*_recipe.py): a block is run as written, with only the
listening address replaced (0.0.0.0:7400 becomes 127.0.0.1:0, then the port the first receiver reports).
Daemon lines (``is_daemon``) start in the background with their own log file and are ended by pid.
"""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path

from tests.helpers.procs import LISTENING
from tests.helpers.source import ROOT
from tests.helpers.waiting import wait_until


def sh_blocks(doc: Path, heading: str) -> list[str]:
    """Return the ```sh blocks of the doc section whose heading starts with ``heading``."""
    text = doc.read_text()
    start = text.index(f"\n{heading}")
    end = text.find("\n## ", start + 1)
    section = text[start : end if end >= 0 else len(text)]
    return re.findall(r"```sh\n(.*?)```", section, flags=re.S)


class Recipe:
    """Run a doc's blocks with its variables (the first block of ``vars_heading``) and ``overrides``."""

    def __init__(
        self,
        root: Path,
        doc: Path,
        overrides: dict[str, str],
        is_daemon: Callable[[str], bool],
        vars_heading: str = "## The variables",
        env: dict[str, str] | None = None,
    ) -> None:
        self.root = root
        self.listen = "127.0.0.1:0"
        """Where a receiver of the recipe listens: port 0 until the first one reports its port."""
        self.doc_vars = sh_blocks(doc, vars_heading)[0]
        self.overrides = overrides
        self.is_daemon = is_daemon
        self.env = {**os.environ, **(env or {})}
        self.daemons: list[subprocess.Popen[bytes]] = []
        self.daemon_lines: list[str] = []

    @property
    def prelude(self) -> str:
        mine = "".join(f"{k}={v}\n" for k, v in self.overrides.items())
        return f"set -euo pipefail\n{self.doc_vars}\n{mine}"

    def run(self, block: str) -> str:
        """Run one block; daemon lines start in the background. Returns the rest's output."""
        foreground = []
        for line in block.splitlines():
            if self.is_daemon(line):
                self.start_daemon(line)
            else:
                foreground.append(line.replace("0.0.0.0:7400", self.listen))
        done = subprocess.run(
            ["bash", "-c", self.prelude + "\n".join(foreground)],
            capture_output=True,
            text=True,
            timeout=180,
            cwd=ROOT,
            env=self.env,
        )
        assert done.returncode == 0, f"block failed ({done.returncode}):\n{block}\n{done.stdout}{done.stderr}"
        return done.stdout

    def start_daemon(self, line: str) -> subprocess.Popen[bytes]:
        """Start one daemon line in the background (``exec``: its pid is the daemon's); a receiver started
        again listens where the first one did."""
        self.daemon_lines.append(line)
        line = line.replace("0.0.0.0:7400", self.listen)
        log_path = self.root / f"daemon-{len(self.daemons)}.log"
        with open(log_path, "ab") as log:
            proc = subprocess.Popen(
                ["bash", "-c", f"{self.prelude}\nexec {line}"], stdout=log, stderr=log, cwd=ROOT, env=self.env
            )
        self.daemons.append(proc)
        if " -m receiver --listen" in line and self.listen.endswith(":0"):
            self.listen = f"127.0.0.1:{self._reported_port(log_path)}"
            self.overrides["RECEIVER"] = self.listen
        return proc

    def _reported_port(self, log_path: Path) -> str:
        """Wait for the receiver just started to log the port it bound; raise with its log if it does not."""
        daemon = self.daemons[-1]

        def reported() -> str | None:
            m = LISTENING.search(log_path.read_text(errors="replace"))
            assert m or daemon.poll() is None, f"the receiver exited: {log_path.read_text(errors='replace')}"
            return m.group(2) if m else None

        return wait_until(reported, 30, interval=0.05, what=f"the receiver to listen (see {log_path})")

    def daemon_logs(self) -> str:
        return "".join(p.read_text(errors="replace") for p in sorted(self.root.glob("daemon-*.log")))

    def stop_daemon(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM by pid, SIGKILL if it does not end in 10 s."""
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)

    def stop(self) -> None:
        for proc in self.daemons:
            self.stop_daemon(proc)
