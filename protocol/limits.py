"""Frame size limits both ends agree on; nothing else, so settings can name them without the codec."""

from __future__ import annotations

from typing import Final

MAX_HEADER: Final = 64 * 1024
"""Largest msgpack header of a frame, in bytes."""
DEFAULT_MAX_PAYLOAD: Final = 4 * 1024 * 1024
"""Largest DATA payload a decoder accepts unless configured otherwise, in bytes."""
