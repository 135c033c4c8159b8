"""``python -m logship.ha --config node.toml``: the HA agent of one node for one stream (etcd witness)."""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys
import tomllib

from logship.ha.admin import publish, serve
from logship.ha.agent import Agent
from logship.ha.commands import COMMANDS
from logship.ha.commands import main as commands_main
from logship.ha.config import AgentConfig, load
from logship.ha.etcd import EtcdClient
from logship.ha.view_file import VIEW_ENV, view_path


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in COMMANDS:
        return commands_main(argv)
    parser = argparse.ArgumentParser(
        prog="logship ha",
        description="Run the HA agent: hold the stream's leader lease in etcd, promote, demote and follow"
        " by decide(); runs on_promote / on_demote / on_follow {primary} hooks from the [ha] table. Operator"
        " commands: logship ha status | switchover --to NODE | failover --to NODE --force (--config FILE).",
        allow_abbrev=False,
    )
    parser.add_argument("--config", required=True, help="TOML file with an [ha] table")
    args = parser.parse_args(argv)
    try:
        with open(args.config, "rb") as f:
            config = load(tomllib.load(f))
    except (OSError, ValueError) as e:
        print(f"logship ha: {args.config}: {e}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    return asyncio.run(_run(config))


async def _run(config: AgentConfig) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with EtcdClient(config.endpoints, timeout=max(config.policy.ttl / 4, 0.5)) as client:
        logging.getLogger("logship.ha").info("agent %s for %s started", config.node, config.daemon.stream)
        agent = Agent(config, client)
        if agent.shipping is not None and config.daemon.data_dir is not None:
            # The shipper shows the view that publish() writes (its status, /status and /metrics).
            agent.shipping.env[VIEW_ENV] = str(view_path(config.daemon.data_dir, config.daemon.stream))
        runner = await serve(agent, config.admin) if config.admin else None
        view = asyncio.create_task(publish(agent))  # the receiver's status shows it (receiver/ha_view.py)
        try:
            await agent.run(stop)
        finally:
            view.cancel()
            await asyncio.gather(view, return_exceptions=True)
            if runner is not None:
                await runner.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
