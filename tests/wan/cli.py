"""scripts/wan: bring the dc1/dc2 test hosts up or down, and run commands in them.

    scripts/wan up [--rate 100mbit] [--rtt 50ms]     create dc1, dc2, the capped link, the delay proxy
    scripts/wan run dc1|dc2 CMD [ARG...]             run CMD inside one host (ip netns exec)
    scripts/wan cut | restore                        take the link down / up again
    scripts/wan status                               what is up, with which rate and RTT
    scripts/wan down                                 stop everything in dc1/dc2 and delete them
    scripts/wan ship [--size 64MiB] [--data random|log] [--compress zstd] [--rate-limit R]
                                                     ship a generated log dc1 -> dc2, print throughput

In dc2 a receiver listens on 127.0.0.1:7401 behind the delay proxy at 198.18.0.2:7400; a shipper in
dc1 ships to --target 198.18.0.2:7400.
"""

from __future__ import annotations

import argparse
import subprocess
import sys

from logship.config import ConfigError, parse_rate
from tests.wan.lab import RECEIVER_LISTEN, TARGET, Wan, WanUnavailable, parse_duration, unavailable_reason


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="scripts/wan",
        description="Two test hosts in network namespaces (dc1, dc2) joined by a link with a bandwidth cap "
        f"(tc tbf) and a round trip (our delay proxy). Receiver in dc2: --listen {RECEIVER_LISTEN}; "
        f"shipper in dc1: --target {TARGET}.",
    )
    p.add_argument("--name", default="", metavar="PREFIX", help="namespace name prefix (default none: dc1, dc2)")
    sub = p.add_subparsers(dest="command", required=True)
    up = sub.add_parser("up", help="create the hosts and the link (idempotent; changes rate/RTT if up)")
    up.add_argument("--rate", default="100mbit", help="link rate, both directions (default 100mbit)")
    up.add_argument("--rtt", default="50ms", help="round-trip time the delay proxy adds (default 50ms)")
    sub.add_parser("down", help="stop what runs in dc1/dc2 and delete them (idempotent)")
    sub.add_parser("status", help="show the hosts, the link and the proxy")
    sub.add_parser("cut", help="take the link down (both veth ends)")
    sub.add_parser("restore", help="bring the link up again")
    run = sub.add_parser("run", help="run a command inside dc1 or dc2")
    run.add_argument("host", choices=["dc1", "dc2"])
    run.add_argument("argv", nargs=argparse.REMAINDER, metavar="CMD")
    ship = sub.add_parser("ship", help="ship a generated log from dc1 to dc2 and report the throughput")
    from tests.wan.ship import add_arguments

    add_arguments(ship)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command != "status":
        reason = unavailable_reason()
        if reason:
            print(f"scripts/wan: cannot run here: {reason}", file=sys.stderr)
            return 2
    try:
        if args.command == "up":
            wan = Wan(args.name, parse_rate(args.rate) * 8, parse_duration(args.rtt))
            was_up = wan.is_up()
            try:
                wan.up()
            except WanUnavailable:
                if not was_up:
                    wan.down()  # leave nothing half made
                raise
            print(wan.describe())
        elif args.command == "down":
            Wan(args.name).down()
        elif args.command == "status":
            print(Wan.current(args.name).describe())
        elif args.command in ("cut", "restore"):
            wan = Wan.current(args.name)
            if not wan.is_up():
                print("scripts/wan: not up (run scripts/wan up first)", file=sys.stderr)
                return 2
            wan.set_link(args.command == "restore")
        elif args.command == "run":
            wan = Wan.current(args.name)
            if not wan.is_up():
                print("scripts/wan: not up (run scripts/wan up first)", file=sys.stderr)
                return 2
            if not args.argv:
                print("scripts/wan: run needs a command", file=sys.stderr)
                return 2
            return subprocess.call(wan.cmd(args.host, args.argv))
        elif args.command == "ship":
            from tests.wan.ship import run_ship

            return run_ship(args)
    except (WanUnavailable, ConfigError, ValueError) as e:
        print(f"scripts/wan: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
