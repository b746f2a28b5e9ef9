"""The `guard` command line. Bad input stops with one line naming the bad option, exit status 2."""

from __future__ import annotations

import argparse
import logging
import os
import re
import sys
from pathlib import Path

from pydantic import ValidationError

from guard.policy import PolicyError


def _guard_options(command: argparse.ArgumentParser, rewinds_help: str) -> None:
    """The options `serve` and `proxy` share (server.settings.GuardSettings)."""
    command.add_argument("--policy", help="policy YAML: the targets to forget (seeds an empty --state-dir)")
    command.add_argument("--state-dir", help="folder for the policy store: run-time targets survive restarts")
    command.add_argument("--host", default="127.0.0.1")
    command.add_argument("--port", type=int, default=8000)
    command.add_argument("--penalty", type=float, default=8.0, help="adaptive penalty strength, in logits")
    command.add_argument("--max-rewinds", type=int, default=6, help=rewinds_help)
    command.add_argument("--no-classifier", action="store_true", help="every target restricts every request")
    command.add_argument("--encoder", default="all-MiniLM-L6-v2", help="sentence-transformers model of the classifier")
    command.add_argument("--target-fpr", type=float, default=0.01, help="classifier false-positive rate to calibrate to")
    command.add_argument("--rate-limit-rpm", type=int, default=0, help="requests per minute per API key (0: no limit)")
    command.add_argument("--rate-limit-tpm", type=int, default=0,
                         help="completion tokens asked for per minute per API key (0: no limit)")
    command.add_argument("--max-request-bytes", type=int, default=8 * 2**20,
                         help="largest request body accepted (larger: 413 before it is parsed); default 8 MiB")
    command.add_argument("--audit-log", help="file for the audit log: a JSON line per restricted request (rotated)")
    command.add_argument("--audit-text", action="store_true", help="include prompt and answer text in the audit log")
    command.add_argument("--tool-call-parser", metavar="NAME",
                         help="vLLM's parser of the model's tool-call format (as `vllm serve --tool-call-parser`; "
                              "e.g. hermes): needed for `tool_choice: auto`, the default where tools are given")


def _guard_settings(args: argparse.Namespace) -> dict:
    return dict(policy=args.policy, state_dir=args.state_dir, host=args.host, port=args.port, penalty=args.penalty,
                max_rewinds=args.max_rewinds, classifier=not args.no_classifier, encoder=args.encoder,
                target_fpr=args.target_fpr, rate_limit_rpm=args.rate_limit_rpm, rate_limit_tpm=args.rate_limit_tpm,
                audit_log=args.audit_log, audit_text=args.audit_text, tool_call_parser=args.tool_call_parser,
                max_request_bytes=args.max_request_bytes)


def _option_error(exc: ValidationError) -> ValueError:
    """The settings' complaints, each naming the option as typed (`--max-rewinds: ...`), the user's
    own words in the message left as they were."""
    def option(name: str) -> str:
        return "--" + name.replace("_", "-")

    problems = []
    for error in exc.errors():
        message = error["msg"].removeprefix("Value error, ")
        if error["loc"]:
            problems.append(f"{option(str(error['loc'][0]))}: {message}")
        else:  # a whole-model check names its field first ("retain: ...")
            problems.append(re.sub(r"^(\w+):", lambda named: option(named[1]) + ":", message))
    return ValueError("; ".join(problems))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="guard", description="Generation-time unlearning for LLMs (GUARD).")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = commands.add_parser("serve", help="OpenAI-compatible server on an embedded vLLM engine")
    serve.add_argument("--model", help="bundled default, a Hugging Face id, or a local checkpoint folder")
    serve.add_argument("--served-model-name", help="model name clients send (default: the model's name)")
    serve.add_argument("--max-model-len", type=int, default=2048)
    serve.add_argument("--kv-cache-gib", type=int, default=1, help="KV cache size on CPU (whole GiB)")
    serve.add_argument("--enforce-eager", action="store_true",
                       help="run the model eagerly, as `vllm serve --enforce-eager`: a faster first start, but "
                            "answers that may differ from vLLM's default (compiled) ones")
    serve.add_argument("--variant", action="append", default=[], metavar="NAME=PATH",
                       help="serve an unlearned variant (LoRA adapter or checkpoint) as NAME and NAME+guard")
    _guard_options(serve, "rephrasings per answer before it is cut")

    proxy = commands.add_parser("proxy", help="the guard in front of an OpenAI-compatible server you already run")
    proxy.add_argument("--upstream", required=True, help="the upstream's OpenAI base URL, e.g. http://host:8000/v1")
    proxy.add_argument("--enforcement", default="auto",
                       help="full (upstream runs the guard's logits processor), bias (logit_bias; needs the "
                            "tokenizer), filter (output filter only) or auto: the strongest the upstream allows")
    proxy.add_argument("--tokenizer", help="the upstream model's tokenizer (default: its model id, if a local folder)")
    proxy.add_argument("--upstream-api-key", help="bearer token for the upstream (default: $GUARD_UPSTREAM_API_KEY)")
    proxy.add_argument("--upstream-timeout", type=float, default=30.0, help="longest wait for any byte, seconds")
    proxy.add_argument("--max-logit-bias", type=int, default=300, help="bias level: logit_bias entries per request")
    proxy.add_argument("--retry-on-leak", action="store_true",
                       help="bias level: ask a whole answer cut by the filter once more, fully biased")
    _guard_options(proxy, "full level: rephrasings per answer before it is cut")

    unlearn = commands.add_parser("unlearn", help="bake weight-level unlearning (FLAT, GA, ...) into a variant")
    unlearn.add_argument("--method", required=True, help="flat, ga, graddiff or npo")
    unlearn.add_argument("--divergence", help="FLAT's f-divergence: kl (default), js, tv or pearson")
    unlearn.add_argument("--forget", required=True, help="JSONL of {question, answer} or {text} to forget")
    unlearn.add_argument("--retain", help="JSONL of {question, answer} or {text} to keep (graddiff)")
    unlearn.add_argument("--out", required=True, help="folder for the variant (adapter or checkpoint + card)")
    unlearn.add_argument("--model", help="base model: bundled default, a Hugging Face id, or a local folder")
    unlearn.add_argument("--full", action="store_true", help="full fine-tuning instead of a LoRA adapter")
    unlearn.add_argument("--lora-rank", type=int, default=8)
    unlearn.add_argument("--lora-alpha", type=float, default=16.0)
    unlearn.add_argument("--lr", type=float, help="learning rate (default: per method)")
    unlearn.add_argument("--epochs", type=float, default=5.0)
    unlearn.add_argument("--max-steps", type=int, help="stop after this many optimizer steps")
    unlearn.add_argument("--batch-size", type=int, default=4)
    unlearn.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    unlearn.add_argument("--warmup-steps", type=int, default=2)
    unlearn.add_argument("--max-length", type=int, default=256, help="tokens per example")
    unlearn.add_argument("--beta", type=float, default=0.1, help="NPO's inverse temperature")
    unlearn.add_argument("--retain-weight", type=float, default=1.0, help="GradDiff's weight of the retain loss")
    unlearn.add_argument("--precision", default="auto", help="auto (bf16 autocast where the hardware has bf16), bf16 or fp32")
    unlearn.add_argument("--seed", type=int, default=0)
    unlearn.add_argument("--overwrite", action="store_true", help="replace a non-empty --out folder")

    bench = commands.add_parser("bench", help="compare GUARD with weight-level unlearning: forget quality, utility, cost")
    bench.add_argument("--suite", default="tiny", help="tiny (CI, minutes), small (bundled model, < 30 min) or known")
    bench.add_argument("--out", required=True, help="folder for results.json, report.md, plots and answers")

    path = commands.add_parser("model-path", help="print the local folder of a prepared model")
    path.add_argument("model", nargs="?", help="default: the bundled model (prepared on first use)")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "model-path":
            from runtime.models import resolve_model

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

    from server.app import create_app
    from server.settings import Settings
    from server.variants import parse_variant

    variants = dict(parse_variant(text) for text in args.variant)

    try:
        settings = Settings(
            model=args.model, served_model_name=args.served_model_name, max_model_len=args.max_model_len,
            kv_cache_gib=args.kv_cache_gib, enforce_eager=args.enforce_eager, variants=variants, **_guard_settings(args),
        )
    except ValidationError as exc:
        raise _option_error(exc) from None
    from runtime.models import resolve_model

    resolve_model(settings.model)  # prepare the bundled model (once) before the server starts
    app = create_app(settings)  # a bad policy or variant stops here, before any engine starts
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _proxy(args: argparse.Namespace) -> int:
    import uvicorn

    from server.proxy import create_proxy_app
    from server.settings import ProxySettings

    try:
        settings = ProxySettings(
            upstream=args.upstream, upstream_api_key=args.upstream_api_key or os.environ.get("GUARD_UPSTREAM_API_KEY"),
            enforcement=args.enforcement, tokenizer=args.tokenizer, max_logit_bias=args.max_logit_bias,
            retry_on_leak=args.retry_on_leak, upstream_timeout=args.upstream_timeout, **_guard_settings(args),
        )
    except ValidationError as exc:
        raise _option_error(exc) from None
    app = create_proxy_app(settings)  # a bad policy, or an upstream that cannot give the level, stops here
    uvicorn.run(app, host=settings.host, port=settings.port, log_level="info")
    return 0


def _unlearn(args: argparse.Namespace) -> int:
    from unlearning.config import UnlearnConfig
    from unlearning.data import load_items

    try:
        config = UnlearnConfig(
            method=args.method, divergence=args.divergence, forget=args.forget, retain=args.retain, out=args.out,
            model=args.model, lora=not args.full, lora_rank=args.lora_rank, lora_alpha=args.lora_alpha, lr=args.lr,
            epochs=args.epochs, max_steps=args.max_steps, batch_size=args.batch_size, grad_accum=args.grad_accum,
            warmup_steps=args.warmup_steps, max_length=args.max_length, beta=args.beta,
            retain_weight=args.retain_weight, precision=args.precision, seed=args.seed, overwrite=args.overwrite,
        )
    except ValidationError as exc:
        raise _option_error(exc) from None
    load_items(config.forget, "forget")  # bad data stops here, before the model loads
    if config.retain:
        load_items(config.retain, "retain")
    from unlearning.trainer import unlearn

    s = unlearn(config)
    print(f"{s.kind} variant written to {s.out}: {s.steps} steps in {s.seconds} s, loss {s.first_loss:.4f} -> "
          f"{s.last_loss:.4f}, forget answers' token probability {s.forget_prob_before:.3f} -> "
          f"{s.forget_prob_after:.3f}")
    return 0


def _bench(args: argparse.Namespace) -> int:
    from benchmarks.suites import get_suite

    suite = get_suite(args.suite)
    from benchmarks.runner import run

    results = run(suite, Path(args.out))
    overhead = results["guard_overhead"]
    print(f"suite {suite.name}: {len(results['methods'])} methods in {results['provenance']['seconds']} s; "
          f"guarded/plain throughput {overhead['throughput_ratio']:.2f}; written to {args.out}/results.json, "
          f"report.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
