"""`aggregator` command line: run, demo, replay, devnet, account, chains, prices, whatif, db,
config."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from aggregator.config import DEFAULT_CONFIG_PATH, AppConfig, ConfigError, load_config

log = logging.getLogger("aggregator")

EXIT_CONFIG = 2
EXIT_UNAVAILABLE = 3


def _setup_logging(verbose: bool) -> None:
    from aggregator.logging import secrets_from_env, setup_logging

    # JSON lines when stderr is not a terminal (systemd, containers), text on a TTY;
    # the keeper key and admin token are scrubbed from every record.
    setup_logging(verbose, secrets=secrets_from_env())


def _register_config_secrets(cfg: AppConfig) -> None:
    """API keys of HTTP price sources live in env variables the config names."""
    from aggregator.logging import add_secret

    for asset in cfg.assets:
        for src in asset.sources:
            for var in getattr(src, "headers_from_env", {}).values():
                add_secret(os.environ.get(var))
    password_env = getattr(cfg.pusher, "keystore_password_env", None)
    if password_env:
        add_secret(os.environ.get(password_env))


def _load(path: str | None) -> AppConfig:
    try:
        return load_config(path)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        raise SystemExit(EXIT_CONFIG) from None


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        cfg = load_config(args.path or args.config)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return EXIT_CONFIG
    print(
        f"config OK: {len(cfg.chains)} chains ({', '.join(cfg.chain_names)}), "
        f"{len(cfg.assets)} assets ({', '.join(cfg.asset_symbols)}), "
        f"{sum(len(a.sources) for a in cfg.assets)} price sources, "
        f"store {cfg.store.url.split(':')[0]}"
    )
    return 0


def cmd_db_upgrade(args: argparse.Namespace) -> int:
    from aggregator.store import Store
    from aggregator.store.migrate import current_revision

    cfg = _load(args.config)

    async def go() -> str | None:
        store = Store(cfg.store.url)
        try:
            await store.upgrade()
            return await current_revision(store.engine)
        finally:
            await store.close()

    rev = asyncio.run(go())
    print(f"store at revision {rev}: {cfg.store.url}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from aggregator.startup import kept_for_life

    with kept_for_life():  # the daemon's modules live as long as this process
        from aggregator.daemon import run_daemon

    cfg = _load(args.config)
    _register_config_secrets(cfg)
    return asyncio.run(run_daemon(cfg, freeze=True))


def _root() -> Path:
    return Path(os.environ.get("AGG_ROOT", Path.cwd()))


def _devkit_missing(cmd: str) -> bool:
    """The devnet lives in the repository's `devkit/` package, which the wheel does not
    ship: from an installed wheel, `demo` and `devnet` say so in one line."""
    import importlib.util

    if importlib.util.find_spec("devkit") is not None:
        return False
    print(
        f"aggregator {cmd}: needs a source checkout (the devkit/ package is not installed)",
        file=sys.stderr,
    )
    return True


def cmd_devnet(args: argparse.Namespace) -> int:
    if _devkit_missing("devnet"):
        return 1
    from devkit import manager

    root = _root()
    try:
        if args.action == "up":
            state = manager.up(root)
            print(json.dumps(state.summary(), indent=2))
            return 0
        if args.action == "down":
            stopped = manager.down(root)
            print(f"devnet stopped ({len(stopped)} nodes)")
            return 0
    except manager.DevnetError as exc:
        print(f"devnet {args.action}: {exc}", file=sys.stderr)
        return 1
    status = manager.status(root)
    print(json.dumps(status, indent=2))
    return 0 if status.get("running") else 1


def cmd_replay(args: argparse.Namespace) -> int:
    if _devkit_missing("replay"):
        return 1
    from aggregator.replay import ReplayOptions, run_replay

    opts = ReplayOptions(
        episode=args.episode if args.cmd == "replay" else args.replay,
        hours_per_block=args.hours_per_block,
        block_interval_s=args.block_interval,
        accounts=args.accounts,
        seed=args.seed,
        out_dir=Path(args.out),
        start_hour=args.start_hour,
        hours=args.hours,
        mode=args.mode,
        api_port=args.api_port,
        reputation=args.reputation,
        responders=args.responders,
        response_max_delay_h=args.response_max_delay,
    )
    return run_replay(_root(), args.config, opts)


def _replay_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--hours-per-block", type=int, default=None,
        help="market hours per step (default: the episode's, docs/replay.md)",
    )  # fmt: skip
    p.add_argument(
        "--block-interval", type=float, default=0.5,
        help="wall seconds per step, one block each (default 0.5: the replay mines)",
    )  # fmt: skip
    p.add_argument("--accounts", type=int, default=2000, help="generated book size")
    p.add_argument("--seed", type=int, default=7, help="population seed")
    p.add_argument("--out", default="docs/replay", help="report JSON and chart directory")
    p.add_argument("--start-hour", type=int, default=0, help="skip this many episode hours")
    p.add_argument("--hours", type=int, default=None, help="replay only this many hours")
    p.add_argument(
        "--mode", default=None,
        help="margin model: standard, predictive, portfolio, var (default: [portfolio] mode)",
    )  # fmt: skip
    p.add_argument(
        "--api-port", type=int, default=None,
        help="the daemon's API port (default: the config's; 0: any free port, so replays "
        "under different AGG_ROOTs can run side by side)",
    )  # fmt: skip
    p.add_argument(
        "--reputation", action="store_true",
        help="turn [reputation] on over the mode (report labelled <mode>+reputation)",
    )  # fmt: skip
    p.add_argument(
        "--responders", type=float, default=0.5,
        help="share of the book's borrowers who repay debt once warned (0: none; "
        "docs/replay.md 'Responders')",
    )  # fmt: skip
    p.add_argument(
        "--response-max-delay", type=int, default=12, metavar="HOURS",
        help="a responder's reaction delay is drawn from 1..HOURS market hours",
    )  # fmt: skip


def cmd_demo(args: argparse.Namespace) -> int:
    if _devkit_missing("demo"):
        return 1
    if args.replay:
        return cmd_replay(args)
    from aggregator.demo import run_demo

    return run_demo(_root(), config_path=args.config, duration_s=args.duration)


def _api_base(cfg_path: str | None, url: str | None) -> str:
    if url:
        return url.rstrip("/")
    cfg = _load(cfg_path)
    return f"http://{cfg.api.host}:{cfg.api.port}"


def _get(base: str, path: str) -> Any:
    try:
        with urllib.request.urlopen(base + path, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        print(f"{path}: HTTP {exc.code}: {body}", file=sys.stderr)
        raise SystemExit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        print(f"daemon not reachable at {base} ({exc}); is `aggregator run` up?", file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE) from None


def _post(base: str, path: str, body: Any) -> Any:
    req = urllib.request.Request(
        base + path,
        data=json.dumps(body).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        detail = exc.read().decode(errors="replace")
        print(f"{path}: HTTP {exc.code}: {detail}", file=sys.stderr)
        raise SystemExit(1) from None
    except (urllib.error.URLError, OSError) as exc:
        print(f"daemon not reachable at {base} ({exc}); is `aggregator run` up?", file=sys.stderr)
        raise SystemExit(EXIT_UNAVAILABLE) from None


def _pairs(flag: str, items: list[str] | None) -> dict[str, float]:
    """ASSET=R arguments as {asset: r}; a malformed one exits 2 naming the flag."""
    out: dict[str, float] = {}
    for item in items or []:
        name, sep, raw = item.partition("=")
        try:
            if not sep or not name:
                raise ValueError(item)
            out[name] = float(raw)
        except ValueError:
            print(f"{flag}: expected ASSET=RELATIVE_CHANGE, got {item!r}", file=sys.stderr)
            raise SystemExit(EXIT_CONFIG) from None
    return out


def cmd_whatif(args: argparse.Namespace) -> int:
    """`aggregator whatif`: POST /v1/whatif to the running daemon (docs/whatif.md)."""
    body: dict[str, Any] = {
        "shocks": _pairs("--shock", args.shock),
        "depegs": _pairs("--depeg", args.depeg),
        "vol": args.vol,
        "chains_down": args.chain_down or [],
        "limit": args.limit,
        "max_slippage": args.max_slippage,
    }
    if args.model:
        body["models"] = args.model
    if args.cursor:
        body["cursor"] = args.cursor
    data = _post(_api_base(args.config, args.api), "/v1/whatif", body)
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from aggregator.whatif import render

    print(render(data))
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    base = _api_base(args.config, args.api)
    if args.cmd == "account":
        data = _get(base, f"/v1/accounts/{args.address}")
    elif args.cmd == "chains":
        data = _get(base, "/v1/chains")
    elif args.cmd == "liquidity":
        data = _get(base, "/v1/liquidity")
    else:
        data = _get(base, f"/v1/prices/{args.asset}" if args.asset else "/v1/prices")
    if args.json:
        print(json.dumps(data, indent=2))
        return 0
    from aggregator import tables

    render = {
        "account": tables.account_text,
        "chains": tables.chains_text,
        "prices": tables.prices_text,
        "liquidity": tables.liquidity_text,
    }[args.cmd]
    print(render(data))
    return 0


def cmd_margin(args: argparse.Namespace) -> int:
    """`aggregator margin report|stress`: the reference book under the three margin
    models, and the stress replay (aggregator/risk/capital.py). Exit 1 when the stress
    finds a healthy-rated account with negative equity."""
    import json

    from aggregator.risk import capital

    ref = capital.load_reference(args.file)
    if args.action == "report":
        rep = capital.capital_report(ref)
        print(json.dumps(rep.to_json(), indent=2) if args.json else capital.render_report(rep))
        return 0
    stress = capital.stress_replay(ref)
    out = stress.to_json()
    print(json.dumps(out, indent=2, default=str) if args.json else capital.render_stress(stress))
    return 0 if out["passed"] else 1


def cmd_reputation_report(args: argparse.Namespace) -> int:
    """`aggregator reputation report`: what a clean year-long history saves against
    neutral accounts on a generated population (aggregator/risk/reputation_report.py,
    docs/reputation.md). Exit 1 when a safety check of the report fails."""
    from aggregator.risk import reputation_report as rr

    if args.accounts < 1:
        print(f"--accounts: must be >= 1, got {args.accounts}", file=sys.stderr)
        return EXIT_CONFIG
    params = None
    if args.config:
        # The bounds and weights of that config's [reputation] (default: the defaults).
        from aggregator.reputation_feed import params_of

        params = params_of(_load(args.config).reputation)
    rep = rr.reputation_report(accounts=args.accounts, seed=args.seed, params=params)
    print(json.dumps(rep.to_json(), indent=2) if args.json else rr.render(rep))
    return 0 if rep.passed else 1


def cmd_risk_backtest(args: argparse.Namespace) -> int:
    """`aggregator risk backtest`: the VaR model and the standard haircut against the
    shipped history (aggregator/marketdata/backtest_run.py; docs/var.md)."""
    from aggregator.marketdata import backtest_run

    return backtest_run.main(args.rest)


def cmd_risk_procyclicality(args: argparse.Namespace) -> int:
    """`aggregator risk procyclicality`: margin procyclicality of each volatility
    treatment over the shipped episodes (docs/procyclicality.md)."""
    from aggregator.marketdata import procyclicality

    return procyclicality.main(args.rest)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="aggregator", description=__doc__)
    p.add_argument(
        "-c",
        "--config",
        default=None,
        help=f"config file (default: $AGG_CONFIG or {DEFAULT_CONFIG_PATH})",
    )
    p.add_argument("-v", "--verbose", action="store_true")
    sub = p.add_subparsers(dest="cmd", required=True)

    sub.add_parser("run", help="run the daemon").set_defaults(func=cmd_run)

    demo = sub.add_parser("demo", help="devnet + market simulator + daemon, until Ctrl-C")
    demo.add_argument("--duration", type=float, default=None, help="stop after N seconds")
    demo.add_argument(
        "--replay", default=None, metavar="EPISODE", help="replay an episode (as replay --episode)"
    )
    _replay_options(demo)
    demo.set_defaults(func=cmd_demo)

    replay = sub.add_parser("replay", help="a real crash through the devnet and the daemon")
    replay.add_argument(
        "--episode",
        required=True,
        help="2020-03, 2022-06, 2022-11, 2023-03, or a date range YYYY-MM-DD..YYYY-MM-DD "
        "(UTC, end exclusive) built from the shipped history (docs/replay.md)",
    )
    _replay_options(replay)
    replay.set_defaults(func=cmd_replay)

    devnet = sub.add_parser("devnet", help="local multi-chain devnet")
    devnet.add_argument("action", choices=["up", "down", "status"])
    devnet.set_defaults(func=cmd_devnet)

    _add_query_commands(sub)
    _add_tool_commands(sub)
    return p


def _add_query_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Questions to the running daemon's API."""
    for name, helptext in (
        ("account", "an account's full breakdown"),
        ("chains", "chain sync and pusher state"),
        ("prices", "prices and their sources"),
        ("liquidity", "sellable within 1/2/5% impact vs collateral at risk"),
    ):
        q = sub.add_parser(name, help=f"{helptext} (from the running daemon)")
        if name == "account":
            q.add_argument("address")
        if name == "prices":
            q.add_argument("asset", nargs="?")
        q.add_argument("--api", default=None, help="daemon API base URL (default: from config)")
        q.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
        q.set_defaults(func=cmd_query)
    w = sub.add_parser("whatif", help="shock the live book (from the running daemon)")
    w.add_argument("--shock", action="append", metavar="ASSET=R", help="price change, -0.3")
    w.add_argument("--depeg", action="append", metavar="LST=D", help="de-peg vs underlying")
    w.add_argument("--vol", type=float, default=0.0, help="relative volatility shift, +0.5")
    w.add_argument("--chain-down", action="append", metavar="CHAIN", help="frozen, stale feeds")
    w.add_argument("--model", action="append", help="only these models (default: all)")
    w.add_argument("--limit", type=int, default=20, help="accounts listed per model")
    w.add_argument("--cursor", default=None, help="next page (next_cursor of the last answer)")
    w.add_argument("--max-slippage", type=float, default=0.05, help="sellable within this")
    w.add_argument("--api", default=None, help="daemon API base URL (default: from config)")
    w.add_argument("--json", action="store_true", help="print the API's JSON (for scripts)")
    w.set_defaults(func=cmd_whatif)


def _add_tool_commands(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Commands that need no running daemon: store, margin models, risk tools, config."""
    db = sub.add_parser("db", help="store maintenance")
    db.add_argument("action", choices=["upgrade"])
    db.set_defaults(func=cmd_db_upgrade)

    margin = sub.add_parser("margin", help="margin models on the reference book (no daemon)")
    margin.add_argument("action", choices=["report", "stress"])
    margin.add_argument(
        "--file", default=None, help="reference book TOML (default: the one shipped)"
    )
    margin.add_argument("--json", action="store_true", help="JSON instead of a table")
    margin.set_defaults(func=cmd_margin)

    risk = sub.add_parser("risk", help="statistical risk model tools (no daemon)")
    risk_sub = risk.add_subparsers(dest="risk_cmd", required=True)
    # Its options belong to backtest_run's own parser (main() hands it the rest of the
    # command line), so the CLI does not import numba and scipy to parse `aggregator run`.
    backtest = risk_sub.add_parser(
        "backtest", help="VaR and haircut backtest over history/ (docs/var.md)", add_help=False
    )
    backtest.set_defaults(func=cmd_risk_backtest, takes_rest=True)
    risk_sub.add_parser(
        "procyclicality",
        help="margin procyclicality over history/ (docs/procyclicality.md)",
        add_help=False,
    ).set_defaults(func=cmd_risk_procyclicality, takes_rest=True)

    rep = sub.add_parser("reputation", help="reputation tools (no daemon)")
    rep.add_argument("action", choices=["report"])
    rep.add_argument("--accounts", type=int, default=10_000, help="generated accounts")
    rep.add_argument("--seed", type=int, default=23, help="the population's seed")
    rep.add_argument("--json", action="store_true", help="JSON instead of a table")
    rep.set_defaults(func=cmd_reputation_report)

    config = sub.add_parser("config", help="configuration")
    config.add_argument("action", choices=["check"])
    config.add_argument("path", nargs="?", default=None)
    config.set_defaults(func=cmd_config_check)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    if rest and not getattr(args, "takes_rest", False):
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    args.rest = rest
    _setup_logging(args.verbose)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
