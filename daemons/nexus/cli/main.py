"""Entry point of ``nexus``: ``nexus <daemon>`` runs a daemon; the rest are admin and developer tools.

Imports of the daemons are deferred to the chosen subcommand so ``nexus --help``
and the admin tools start fast.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from nexus.config import ConfigError, NexusConfig, load_config

DAEMONS: dict[str, tuple[str, str]] = {
    "gateway": ("nexus.gateway.daemon", "AI gateway: OpenAI-compatible /v1 behind virtual keys (:3050)"),
    "proxy": ("nexus.proxy.daemon", "compliance proxy: HTTP CONNECT with TLS bump of AI hosts (:3128)"),
    "hub": ("nexus.hub.daemon", "hub: thing registry, config sync, jobs, audit writer (:3060)"),
    "control-plane": ("nexus.controlplane.daemon", "control plane: admin API, IAM, sign-in, vault (:3001)"),
    "agent": ("nexus.agent.daemon", "desktop agent: endpoint interception with local hooks"),
    "mock-provider": ("nexus.mock.daemon", "mock LLM upstream speaking OpenAI, Anthropic and Gemini (:3062)"),
}


def _load(args: argparse.Namespace) -> NexusConfig:
    try:
        return load_config(args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(2) from None


def _run_daemon(args: argparse.Namespace) -> int:
    import importlib

    from nexus.crypto.secretfiles import SecretsError
    from nexus.runtime import daemon, logs

    config = _load(args)
    logs.configure(args.daemon, config.log.level, config.log.format)
    module = importlib.import_module(DAEMONS[args.daemon][0])
    control = daemon.Control()
    try:
        spec = module.build(config, control)
    except (SecretsError, ConfigError) as exc:
        print(f"{args.daemon}: {exc}", file=sys.stderr)
        return 2
    return daemon.run(spec, control)


def _config_check(args: argparse.Namespace) -> int:
    try:
        load_config(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    print(f"{args.file}: ok")
    return 0


def _db(args: argparse.Namespace) -> int:
    from nexus.cli import db

    config = _load(args)
    handler: Callable[[argparse.Namespace, NexusConfig], int] = getattr(db, args.db_command.replace("-", "_"))
    return handler(args, config)


def _dev_up(args: argparse.Namespace) -> int:
    from nexus.devstack import up

    return up.main(args)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nexus", description="Nexus AI-traffic appliance")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def config_arg(p: argparse.ArgumentParser) -> None:
        p.add_argument("--config", "-c", metavar="FILE",
                       help="TOML config (default: $NEXUS_CONFIG, else /etc/nexus/nexus.toml if present)")

    for name, (_module, help_text) in DAEMONS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        config_arg(p)
        p.set_defaults(func=_run_daemon, daemon=name)

    db = sub.add_parser("db", help="database migrations and seed data")
    db_sub = db.add_subparsers(dest="db_command", required=True, metavar="DB_COMMAND")
    for name, help_text in (
        ("migrate", "create the database if missing and apply pending migrations"),
        ("status", "list applied and pending migrations"),
        ("seed-demo", "seed a demo org, admin, mock provider, models and a virtual key (idempotent)"),
    ):
        p = db_sub.add_parser(name, help=help_text, description=help_text)
        config_arg(p)
        if name == "seed-demo":
            p.add_argument("--json", action="store_true", help="print what was seeded as JSON")
            p.add_argument("--mock-url", default="http://127.0.0.1:3062", help="base URL of the mock provider")
            p.add_argument("--with-hooks", action="store_true",
                           help="also enable the default compliance hooks (secrets, PII, prompt injection)")
        p.set_defaults(func=_db)

    cfg = sub.add_parser("config", help="configuration tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="CONFIG_COMMAND")
    check = cfg_sub.add_parser("check", help="validate a config file (with NEXUS_* overrides applied)")
    check.add_argument("file", metavar="FILE")
    check.set_defaults(func=_config_check)

    from nexus.cli import rules, traffic

    rules.add_parser(sub)
    traffic.add_parser(sub)

    dev = sub.add_parser("dev", help="developer stack")
    dev_sub = dev.add_subparsers(dest="dev_command", required=True, metavar="DEV_COMMAND")
    up = dev_sub.add_parser("up", help="start storage (if needed), migrate, seed, and run every daemon (make run)",
                            description="Start storage (if needed), migrate, seed, and run every daemon.")
    up.add_argument("--state-dir", default=".nexus/dev", help="where private servers, secrets and logs live")
    up.add_argument("--no-daemons", action="store_true", help="only prepare storage, migrations and seed data")
    up.set_defaults(func=_dev_up)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    result: int = args.func(args)
    return result


if __name__ == "__main__":
    raise SystemExit(main())
