"""Per-stream secrets with real processes, and secret files that others can read."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from tests.helpers.copies import assert_copy_converged
from tests.helpers.procs import Proc, shipper_proc
from tests.helpers.source import ROOT, make_secret
from tests.helpers.waiting import wait_until


def test_stream_a_secret_cannot_write_stream_b(tmp_path: Path, procs: list[Proc]) -> None:
    secret_a, secret_b = make_secret(tmp_path / "a.secret"), make_secret(tmp_path / "b.secret")
    data = tmp_path / "receiver"
    conf = tmp_path / "receiver.toml"
    conf.write_text(
        f'listen = "127.0.0.1:0"\ndata_dir = "{data}"\n'
        f'[streams.a]\nsecret_file = "{secret_a}"\n[streams.b]\nsecret_file = "{secret_b}"\n'
    )
    receiver = Proc("receiver", ["--config", str(conf)], tmp_path / "receiver.log")
    procs.append(receiver.start())
    port = receiver.listen_port()
    sources = {}
    for name in ("a", "b"):
        sources[name] = tmp_path / f"src-{name}"
        sources[name].mkdir()
        (sources[name] / "E0000000001.log").write_bytes(name.encode() * 50_000)
    # The holder of a's secret ships a, and tries b (and a stream the receiver does not serve).
    good = shipper_proc(tmp_path, "a", sources["a"], [port], secret_a, ["--seal", "immediate"])
    thief = shipper_proc(tmp_path, "b", sources["b"], [port], secret_a, ["--seal", "immediate"])
    stranger = shipper_proc(tmp_path, "c", sources["b"], [port], secret_a, ["--seal", "immediate"])
    procs += [good.start(), thief.start(), stranger.start()]
    wait_until(lambda: (data / "a" / "log" / "E0000000001.log").exists(), 30, what="stream a to be copied")
    assert_copy_converged(sources["a"], data / "a", ["E0000000001.log"])
    wait_until(lambda: receiver.count("wrong proof for stream 'b'") >= 1, 30, what="b to be refused")
    wait_until(lambda: receiver.count("stream 'c' is not served here") >= 1, 30, what="c to be refused")
    wait_until(lambda: "secret mismatch for stream b" in thief.log_text(), 10, what="the thief to say why")
    # A refusal that retrying cannot fix is a state with a long back-off, not a loop: one try, one line.
    time.sleep(3)
    assert receiver.count("wrong proof for stream 'b'") == 1
    assert thief.count("secret mismatch for stream b: both ends must use the same secret file") == 1
    assert "retrying after a growing pause (up to 120s)" in thief.log_text()
    assert not (data / "b").exists() and not (data / "c").exists()
    # The rightful holder of b's secret still gets in.
    rightful = shipper_proc(tmp_path, "b", sources["b"], [port], secret_b, ["--seal", "immediate"])
    rightful.log_path = tmp_path / "shipper-b-rightful.log"
    procs.append(rightful.start())
    wait_until(lambda: (data / "b" / "log" / "E0000000001.log").exists(), 30, what="stream b from its owner")
    assert_copy_converged(sources["b"], data / "b", ["E0000000001.log"])


def _run(module: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, timeout=30, cwd=ROOT)


def test_secret_files_readable_by_others_refuse_to_start(tmp_path: Path) -> None:
    for mode in (0o640, 0o604, 0o660, 0o644):
        loose = make_secret(tmp_path / f"loose-{mode:o}")
        loose.chmod(mode)
        conf = tmp_path / "receiver.toml"
        conf.write_text(
            f'listen = "127.0.0.1:0"\ndata_dir = "{tmp_path / "d"}"\n[streams.a]\nsecret_file = "{loose}"\n'
        )
        out = _run("receiver", "--config", str(conf))
        assert out.returncode == 2, out.stderr
        assert f"secret file {loose} is accessible by group or others" in out.stderr
        assert f"chmod 600 {loose}" in out.stderr and "Traceback" not in out.stderr
        src = tmp_path / "src"
        src.mkdir(exist_ok=True)
        out = _run(
            "shipper", "--stream", "a", "--source", str(src), "--target", "127.0.0.1:1", "--secret-file", str(loose)
        )
        assert out.returncode == 2 and f"chmod 600 {loose}" in out.stderr, out.stderr
    assert not (tmp_path / "d").exists(), "the receiver created its data dir before refusing"
