"""The `guard` command line. Bad input stops with one line naming the bad option, exit status 2."""

from __future__ import annotations

import argparse
import logging
import sys

from cli.flags import add_options, build
from guard.policy import PolicyError


def _parser(command: str | None = None) -> argparse.ArgumentParser:
    """Every command's options come from its settings model (cli.flags); model-path takes one argument.
    `unlearn`'s and `bench`'s are built only when it is the `command` (their models import more)."""
    from server.settings import ProxySettings, Settings

    parser = argparse.ArgumentParser(prog="guard", description="Generation-time unlearning for LLMs (GUARD).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    environment = "Each option can also come from the environment: GUARD_ and its name (GUARD_MAX_REWINDS)."
    add_options(commands.add_parser("serve", help="OpenAI-compatible server on an embedded vLLM engine",
                                    epilog=environment), Settings, {"variants": "NAME=PATH"})
    add_options(commands.add_parser("proxy", help="the guard in front of an OpenAI-compatible server you already run",
                                    epilog=environment), ProxySettings)
    unlearn = commands.add_parser("unlearn", help="bake weight-level unlearning (FLAT, GA, ...) into a variant")
    if command == "unlearn":
        from unlearning.config import UnlearnConfig

        add_options(unlearn, UnlearnConfig, {"dampening": "LAMBDA"})

    bench = commands.add_parser("bench", help="compare GUARD with weight-level unlearning: forget quality, utility, cost")
    if command == "bench":
        from benchmarks.suites import BenchOptions

        add_options(bench, BenchOptions)

    path = commands.add_parser("model-path", help="print the local folder of a prepared model")
    path.add_argument("model", nargs="?", help="default: the bundled model (prepared on first use)")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = _parser(argv[0] if argv else None).parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        from runtime.models import guard_home, resolve_model

        guard_home()  # GUARD_HOME checked at the start of every command
        if args.command == "model-path":
            print(resolve_model(args.model))
            return 0
        if args.command == "serve":
            return _serve(args)
        if args.command == "proxy":
            return _proxy(args)
        if args.command == "unlearn":
            return _unlearn(args)
        if args.command == "bench":
            return _bench(args)
    except (PolicyError, ValueError, RuntimeError) as exc:
        print(f"guard {args.command}: {exc}", file=sys.stderr)
        return 2
    return 2


def _serve(args: argparse.Namespace) -> int:
    import uvicorn

    from runtime.models import resolve_model
    from server.app import create_app
    from server.settings import Settings

    settings = build(Settings, args)
    resolve_model(settings.model)  # prepare the bundled model (once) before the server starts
    app = create_app(settings)  # a bad policy or variant stops here, before any engine starts
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _proxy(args: argparse.Namespace) -> int:
    import uvicorn

    from server.proxy import create_proxy_app
    from server.settings import ProxySettings

    settings = build(ProxySettings, args)
    app = create_proxy_app(settings)  # a bad policy, or an upstream that cannot give the level, stops here
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _unlearn(args: argparse.Namespace) -> int:
    from unlearning.config import UnlearnConfig
    from unlearning.data import load_items

    config = build(UnlearnConfig, args)
    load_items(config.forget, "forget")  # bad data stops here, before the model loads
    if config.retain:
        load_items(config.retain, "retain")
    from unlearning.trainer import unlearn

    s = unlearn(config)
    if s.steps:
        done = f"{s.steps} steps in {s.seconds} s, loss {s.first_loss:.4f} -> {s.last_loss:.4f}"
        done += f" ({100 * s.selected:.2f}% of its parameters trained)" if s.selected is not None else ""
    else:
        done = f"{100 * s.selected:.2f}% of its parameters dampened in {s.seconds} s"
    print(f"{s.kind} variant written to {s.out}: {done}, forget answers' token probability "
          f"{s.forget_prob_before:.3f} -> {s.forget_prob_after:.3f}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.suites import BenchOptions

    options = build(BenchOptions, args)
    suite = options.chosen
    results = suite.run(options.out)
    overhead = results.get("guard_overhead")
    print(f"suite {suite.name}: {len(results['methods'])} methods in {results['provenance']['seconds']} s; "
          + (f"guarded/plain throughput {overhead['throughput_ratio']:.2f}; " if overhead else "")
          + f"written to {options.out}/results.json, report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
