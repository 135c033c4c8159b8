"""What a running shipper is given: frozen settings, with their defaults written here once.

``shipper/config.py`` builds them from the command line and the TOML file; the runtime modules
(sender, tailer, service, state) read them. Nothing here runs, reads a file or opens a socket, beyond
looking at the environment for the default state directory.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from protocol.compression import Compression
from protocol.history import History

DEFAULT_CHUNK_SIZE = 1024 * 1024
"""The smallest chunk an ``auto`` chunk size picks (and the chunk of SenderConfig() as built in tests)."""
LARGE_CHUNK_SIZE = 4 * 1024 * 1024
"""The largest chunk an ``auto`` chunk size picks: the receiver's default --max-payload."""
DEFAULT_WINDOW = 16 * 1024 * 1024
DEFAULT_WINDOW_MIN = 8 * 1024 * 1024
DEFAULT_WINDOW_MAX = 64 * 1024 * 1024
DEFAULT_ACK_TIMEOUT = 30.0
DEFAULT_POLL_INTERVAL = 0.02
SEAL_MODES = ("next", "closed", "immediate")
DEFAULT_PATTERN = r"(?!\.)(?!.*\.(?:tmp|partial)$).+"


def default_state_dir() -> Path:
    """Return the state directory used without ``--state-dir``.

    ``$LOGSHIP_SHIPPER_STATE_DIR`` if set; else ``/var/lib/logship/shipper`` for root; else
    ``$XDG_STATE_HOME/logship/shipper`` (``~/.local/state/logship/shipper``).
    """
    env = os.environ.get("LOGSHIP_SHIPPER_STATE_DIR")
    if env:
        return Path(env)
    if os.geteuid() == 0:
        return Path("/var/lib/logship/shipper")
    xdg = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(xdg) / "logship" / "shipper"


@dataclass(frozen=True, slots=True)
class SenderConfig:
    """How a sender paces itself."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    """Largest DATA payload, in bytes (the receiver accepts up to its --max-payload, 4 MiB by default)."""
    window: int = DEFAULT_WINDOW
    """Bytes sent but not yet acknowledged, at most: the starting window when ``adaptive``."""
    adaptive: bool = True
    """Grow or shrink the window toward 2 x the link's bandwidth x round trip (see shipper/pacing.py)."""
    window_min: int = DEFAULT_WINDOW_MIN
    """Smallest adaptive window."""
    window_max: int = DEFAULT_WINDOW_MAX
    """Largest adaptive window."""
    heartbeat: float = 5.0
    """Seconds of quiet after which we send a HEARTBEAT."""
    ack_timeout: float = DEFAULT_ACK_TIMEOUT
    """Seconds without any frame from the target after which the connection counts as dead."""
    connect_timeout: float = 10.0
    """Seconds to connect and finish the handshake."""
    backoff_max: float = 2.0
    """Longest pause between reconnection attempts, in seconds."""
    compression: Compression | None = None
    """Compress DATA payloads towards this target if it supports the encoding (None: never)."""
    rate_limit: float | None = None
    """Most bytes per second on the wire towards this target (None: no limit)."""
    payload_mac: bool = False
    """Ask for the payload MAC: DATA payloads then carry a MAC under the session key (GMAC, or HMAC-SHA256)."""
    refused_backoff: float = 120.0
    """Pause after a permanent refusal (wrong secret, version, name): a fix takes an operator anyway."""
    history: History = field(default_factory=History)
    """The stream's history, sent in HELLO (the stream's, filled in per target by the service)."""
    seed: Any = None
    """How a Seeding target's base image is made (shipper/seed.py SeedSettings); None: no seed_command."""


@dataclass(frozen=True, slots=True)
class SealPolicy:
    """When a segment counts as complete."""

    mode: str = "next"
    """``next``: when a later segment appears; ``closed``: when a later segment appears and the writer has
    closed it (inotify IN_CLOSE_WRITE) or it has not changed for ``settle`` seconds; ``immediate``: every
    file is complete on sight."""
    seal_idle: float | None = None
    """Also seal the newest segment once it has not changed for this many seconds."""
    segment_size: int | None = None
    """Also seal a segment once it reaches this many bytes."""
    settle: float = 1.0
    """In ``closed`` mode: seconds without a change after which a segment with a later one counts as closed
    when no close was seen (inotify unavailable, or the writer closed it before the shipper watched)."""


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """The files of a client TLS setting; the wiring turns them into an SSLContext (logship.tls)."""

    cert: Path | None
    """Client certificate (PEM; may hold the key); None: present none."""
    key: Path | None
    """Its private key, if not in ``cert``."""
    ca: Path | None
    """CA the receiver's certificate must be signed by; None: the system store."""


@dataclass(frozen=True, slots=True)
class TargetConfig:
    """One receiver a stream is shipped to."""

    address: tuple[str, int]
    """Host and port of the receiver."""
    secret: bytes
    """Secret proven to this target."""
    tls: TlsFiles | None = None
    """TLS towards this target (verifying its certificate); None: plain TCP."""
    sender: SenderConfig | None = None
    """This target's own pacing (window, chunk size); None: the shipper's."""
    wait_for_replay: bool = True
    """Whether retention waits until the target replayed a segment, not only until it holds it durably."""
    compression: Compression | None = None
    """Compress DATA payloads towards this target (if it supports the encoding); None: never."""
    rate_limit: float | None = None
    """Most bytes per second on the wire towards this target; None: no limit."""
    payload_mac: bool = False
    """Authenticate every DATA payload with a MAC (GMAC, or HMAC-SHA256) under the session key."""

    @property
    def name(self) -> str:
        return f"{self.address[0]}:{self.address[1]}"


@dataclass(frozen=True, slots=True)
class StreamConfig:
    """One stream a shipper ships."""

    name: str
    """Stream name, as the receivers know it."""
    source: Path
    """Directory holding the stream's segments."""
    targets: tuple[TargetConfig, ...]
    """Receivers to ship to, each with its own connection and cursor."""
    pattern: re.Pattern[str]
    """Which file names are segments."""
    policy: SealPolicy
    """When a segment is complete."""
    epoch: int = 0
    """Epoch this shipper claims; a target activated at a newer epoch fences it."""
    history: History = field(default_factory=History)
    """The forks of the epochs it ships under (``--history FILE``), sent in HELLO."""
    poll_interval: float = DEFAULT_POLL_INTERVAL
    """Seconds between looks at the source directory."""
    retain: bool = False
    """Remove source segments once every target holds them (see shipper/retainer.py)."""
    archive_dir: Path | None = None
    """With ``retain``: move removed segments here instead of deleting them."""
    truncation_lag: float = 0.0
    """With ``retain``: seconds to keep a segment after the last target got it."""
    sync: str | None = None
    """The sync policy ``wait`` applies when not told one (shipper/policy.py); None: ANY 1."""
    seed_command: str | None = None
    """Shell command that writes a base image (a tar) to stdout for a Seeding target (issue 17)."""
    seed_dir: Path | None = None
    """Where images are spooled, one directory per target (``<state_dir>/seed/<stream>``)."""


@dataclass(frozen=True, slots=True)
class ShipperConfig:
    """Everything a shipper process runs."""

    node: str
    """Our name in handshakes and logs."""
    streams: tuple[StreamConfig, ...]
    """The streams to ship."""
    sender: SenderConfig
    """Pacing of every sender."""
    state_dir: Path = field(default_factory=default_state_dir)
    """Suspended targets and the control socket live here."""
    state_dir_given: bool = False
    """Whether the operator chose ``state_dir`` (then a busy one is an error, not a warning)."""
    admin: tuple[str, int] | None = None
    """Where to serve /status and /metrics over HTTP; None: not at all."""
