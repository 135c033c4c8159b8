"""Run one replay command and record its exit status durably, even if the receiver is gone by then.

``python -m receiver.replay_wrapper RUN_DIR SEGMENT ATTEMPT KIND TIMEOUT COMMAND`` (started by
receiver/replay_run.py in a session of its own): claim the attempt in RUN_DIR/replay-run.json under its
lock, run COMMAND with /bin/sh in this process group, then record the exit status. A command that
outlives TIMEOUT is killed with the whole group, after the record says so.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

from logship.files import write_atomic
from receiver.replay_run import LOCK_FILE, REFUSED, RUN_FILE, RunRecord, boot_id, locked, process_start, read_run


def main(argv: list[str] | None = None) -> int:
    run_dir, segment, attempt_text, kind, timeout_text, command = argv if argv is not None else sys.argv[1:]
    run_dir_path = Path(run_dir)
    run_file = run_dir_path / RUN_FILE
    attempt, timeout = int(attempt_text), float(timeout_text)
    pid = os.getpid()
    running = RunRecord(segment, attempt, "running", kind, pid, process_start(pid), boot_id(), started_at=time.time())
    with locked(run_dir_path / LOCK_FILE):
        before = read_run(run_file)
        if before is not None and (before.segment, before.attempt) == (segment, attempt):
            # A restarted receiver settled this attempt as never started: running it now would be twice.
            print(f"replay_wrapper: {segment} attempt {attempt} is already {before.state}; not run", file=sys.stderr)
            return REFUSED
        write_atomic(run_file, running.to_bytes(), 0o600)
    proc = subprocess.Popen(
        ["/bin/sh", "-c", command], stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT
    )
    try:
        out, _ = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        record = replace(running, state="killed", reason=f"timed out after {timeout:g}s", ended_at=time.time())
        write_atomic(run_file, record.to_bytes(), 0o600)
        # The record says "killed" before anything dies: a crash in between reads as interrupted either way.
        os.killpg(os.getpgrp(), signal.SIGKILL)
        return 1  # not reached
    text = out.decode(errors="replace").strip()[-500:]
    record = replace(running, state="done", rc=proc.returncode, output=text, ended_at=time.time())
    write_atomic(run_file, record.to_bytes(), 0o600)
    return 0 if proc.returncode == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
