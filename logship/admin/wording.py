"""Log wording both daemons share (no imports beyond the standard library: the daemons load it at start)."""

from __future__ import annotations


def resume_text(segment: str, offset: int, sealed: bool) -> str:
    """Return where a connection resumes, for the log: ``resuming at SEG@OFF (sealed)``, or, for a copy
    that holds nothing yet, ``starting from the first segment (empty copy)``."""
    if not segment:
        return "starting from the first segment (empty copy)"
    return f"resuming at {segment}@{offset}{' (sealed)' if sealed else ''}"


# -- TLS: what went wrong, in the words of the fix ---------------------------------------------------

NOT_TLS_HINT = "drop this target's TLS settings (tls_ca, tls_cert), or give the receiver --tls-cert and --tls-key"
CLIENT_CERT_HINT = "give this target tls_cert and tls_key, or --tls-cert and --tls-key, signed by the receiver's tls_ca"


def _reason(e: BaseException) -> str:
    """The OpenSSL reason code of an ssl.SSLError (e.g. ``WRONG_VERSION_NUMBER``), else ''."""
    return str(getattr(e, "reason", "") or "")


def shipper_failure(e: BaseException, tls: bool) -> str:
    """Say why a connection to a target failed, for the shipper's log and status (``tls``: it dialled TLS)."""
    reason = _reason(e)
    verify = getattr(e, "verify_message", None)
    if verify:
        return (
            f"TLS: the target's certificate is not trusted (certificate verify failed: {verify}): check this "
            "target's tls_ca, and that the certificate names the address dialled"
        )
    if reason in ("WRONG_VERSION_NUMBER", "RECORD_LAYER_FAILURE", "PACKET_LENGTH_TOO_LONG", "UNKNOWN_PROTOCOL"):
        return f"the target does not speak TLS (it answered in plain): {NOT_TLS_HINT}"
    if reason in ("TLSV13_ALERT_CERTIFICATE_REQUIRED", "SSLV3_ALERT_HANDSHAKE_FAILURE") and tls:
        return f"the receiver requires a client certificate: {CLIENT_CERT_HINT}"
    if reason and tls:
        return f"TLS handshake with the target failed: {reason} ({e})"
    return str(e) or type(e).__name__


def receiver_tls_failure(e: BaseException, timeout: float, client_ca: bool) -> str:
    """Say why a peer's TLS handshake failed, for the receiver's log (``client_ca``: it requires a client cert)."""
    reason = _reason(e)
    verify = getattr(e, "verify_message", None)
    if reason == "PEER_DID_NOT_RETURN_A_CERTIFICATE" or (reason == "NO_CERTIFICATES_RETURNED" and client_ca):
        return (
            "the shipper sent no client certificate, and this receiver requires one (it has tls_ca): give the "
            "shipper tls_cert and tls_key"
        )
    if verify or reason == "CERTIFICATE_VERIFY_FAILED":
        return f"the shipper's client certificate is not trusted (not signed by this receiver's tls_ca): {verify or e}"
    if isinstance(e, TimeoutError) or "taking longer than" in str(e):  # asyncio's ssl_handshake_timeout
        return (
            f"no TLS handshake within {timeout:g}s: this receiver speaks only TLS; a plain (non-TLS) shipper? "
            "give it tls_ca (--tls-ca)"
        )
    if reason == "HTTP_REQUEST":
        return "not a logship peer: an HTTP request on the TLS data port"
    if reason in ("WRONG_VERSION_NUMBER", "UNKNOWN_PROTOCOL", "RECORD_LAYER_FAILURE", "UNSUPPORTED_PROTOCOL"):
        return f"the peer does not speak TLS ({reason}): this receiver speaks only TLS"
    if reason:
        return f"{reason}: {e}"
    # The shipper hung up in the handshake without a word: what a client does with a certificate it rejects.
    return (
        f"the peer ended the TLS handshake ({type(e).__name__}{f': {e}' if str(e) else ''}): a shipper that does "
        "not trust this receiver's certificate (its tls_ca, or the name it dials, does not match)"
    )


class Throttle:
    """Let one line per key through per ``every`` seconds: a misconfigured peer retries every few seconds,
    and a journal needs the reason once a minute, not 1,800 times an hour."""

    def __init__(self, every: float = 60.0) -> None:
        self.every = every
        self._last: dict[object, tuple[float, int]] = {}

    def allow(self, key: object, now: float) -> int | None:
        """Return how many lines were held back since the last one let through, or None to hold this one."""
        last = self._last.get(key)
        if last is not None and now - last[0] < self.every:
            self._last[key] = (last[0], last[1] + 1)
            return None
        if len(self._last) > 1024:
            self._last.clear()  # bounded: many peers with many reasons only cost a repeated line
        self._last[key] = (now, 0)
        return 0 if last is None else last[1]
