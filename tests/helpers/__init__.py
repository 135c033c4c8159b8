"""What the test layers share, one copy each.

- ``frames``: frames built or read by hand (raw headers, wrong length prefixes, whole frames off a stream).
- ``procs``: real ``python -m receiver|shipper`` processes; servers bind port 0 and report the port.
- ``proxies``: TCP proxies the tests own (a plain relay, a frame-aware fault proxy, a damaging link),
  run on their own event loop in a thread for synchronous tests.
- ``delayproxy``: the proxy that adds latency (the WAN lab runs it as a process).
- ``source``: writing a source log (segment names, a growing writer, scripts/loadgen), secrets.
- ``copies``: checking a receiver's copy against the source.
- ``rawclient``: an authenticated raw protocol client for hostile-input tests.
- ``pgcluster``: tiny real PostgreSQL clusters.
- ``waiting``: polling for a condition with a deadline.
"""
