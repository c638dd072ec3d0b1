"""``moesim trace synth`` and ``moesim trace collect``: write routing traces from the command line.

The library side lives in :mod:`workloads.synthetic_trace` and :mod:`workloads.collect`; this
module only parses arguments, calls them, writes the trace and prints its statistics.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from experiments.arguments import Parser, UsageError, fail, help_status, non_negative, positive, whole
from experiments.output_dir import check_output_file
from workloads.collect import (
    DTYPES,
    CollectError,
    MissingDependencyError,
    collect_trace,
    import_backend,
    router_rule,
)
from workloads.routing_trace import format_summary, save_trace, summary
from workloads.synthetic_trace import synth_trace


def _synth_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="moesim trace synth", description="Write a synthetic MoE routing trace (.npz).")
    parser.add_argument("--out", type=Path, required=True, help="the trace file to write")
    parser.add_argument("--experts", type=positive, default=64, help="experts per layer (64)")
    parser.add_argument("--top-k", type=positive, default=8, help="experts per token (8)")
    parser.add_argument("--layers", type=positive, default=8, help="MoE layers (8)")
    parser.add_argument("--tokens-per-gpu", type=positive, default=4096, help="tokens per GPU (4096)")
    parser.add_argument("--gpus", type=positive, default=16, help="GPUs / expert-parallel ranks (16)")
    skew = parser.add_mutually_exclusive_group()
    skew.add_argument("--imbalance", type=non_negative, help="target (max-mean)/mean expert load per layer")
    skew.add_argument("--zipf", type=non_negative, help="fixed Zipf exponent of expert popularity")
    parser.add_argument(
        "--affinity", type=non_negative, default=0.0, help="target layer-to-layer U in [0, 1]"
    )
    parser.add_argument(
        "--drift", type=non_negative, default=0.0, help="popularity drift per batch in [0, 1]"
    )
    parser.add_argument("--batches", type=positive, default=1, help="batches the tokens are split into (1)")
    parser.add_argument("--hidden", type=positive, default=4096, help="hidden size in elements (4096)")
    parser.add_argument("--bytes-per-element", type=positive, default=2, help="bytes per element (2)")
    parser.add_argument("--seed", type=whole(0), default=0, help="random seed (0)")
    parser.add_argument("--model", default="synthetic", help="model name stored in the trace")
    return parser


def _check_out(out: Path) -> None:
    """The trace file ``--out`` can be written: its directory exists and takes files."""
    check_output_file(out)  # a directory, a file as parent, a read-only place
    if not out.parent.is_dir():
        raise UsageError(f"--out {out}: directory {out.parent} does not exist (create it first)")


def synth_main(argv: Sequence[str] | None = None) -> int:
    """``moesim trace synth``: write a synthetic trace and print its statistics; returns the exit status."""
    try:
        args = _synth_parser().parse_args(argv)
        _check_out(args.out)
        start = time.perf_counter()
        trace = synth_trace(
            experts=args.experts,
            top_k=args.top_k,
            layers=args.layers,
            tokens_per_gpu=args.tokens_per_gpu,
            gpus=args.gpus,
            imbalance=args.imbalance,
            zipf=args.zipf,
            affinity=args.affinity,
            drift=args.drift,
            batches=args.batches,
            hidden=args.hidden,
            bytes_per_element=args.bytes_per_element,
            seed=args.seed,
            model=args.model,
        )
        elapsed = time.perf_counter() - start
        save_trace(trace, args.out)
    except SystemExit as done:  # --help
        return help_status(done)
    except (ValueError, OSError) as err:
        return fail(err)
    print(f"wrote {args.out} ({trace.tokens} tokens, generated in {elapsed:.2f} s)")
    print(format_summary(summary(trace)))
    return 0


# ----------------------------------------------------------------------------------------------
# command line: moesim trace collect


def _collect_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="moesim trace collect",
        description="Record the router top-k choices of a local Hugging Face MoE model as a routing trace.",
    )
    parser.add_argument(
        "--model", required=True, help="local model directory, or a model name already in the local HF cache"
    )
    parser.add_argument("--text", type=Path, required=True, help="UTF-8 text file to run the model over")
    parser.add_argument("--out", type=Path, required=True, help="the trace file to write (.npz)")
    parser.add_argument("--gpus", type=positive, default=8, help="expert-parallel ranks (8)")
    parser.add_argument("--max-tokens", type=positive, help="at most this many tokens (all)")
    parser.add_argument(
        "--batch-tokens",
        type=positive,
        help="tokens per forward chunk (512, or the model's context if less)",
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), help="cpu or cuda (cuda when available)")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bfloat16", help="model dtype (bfloat16)")
    parser.add_argument(
        "--token-ids",
        action="store_true",
        help="--text holds whitespace-separated integer token ids (no tokenizer is loaded, no BOS added)",
    )
    return parser


def _read_text(path: Path, token_ids: bool) -> str | np.ndarray:
    if not path.is_file():
        raise UsageError(f"--text {path}: no such file")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError as err:
        raise UsageError(f"--text {path}: not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not token_ids:
        return text
    words = text.split()
    bad = next((w for w in words if not (w.isascii() and w.isdigit())), None)
    if bad is not None:
        raise UsageError(f"--text {path}: {bad!r} is not a token id (with --token-ids give whole numbers)")
    return np.array([int(w) for w in words], dtype=np.int64)


def _load_error(name: str, err: BaseException, local: bool) -> CollectError:
    if not local:
        return CollectError(
            f"--model {name}: no such directory, and no model of that name in the local Hugging Face cache "
            "(models are loaded from local files only)"
        )
    first = " ".join(str(err).split())[:200] or type(err).__name__
    return CollectError(
        f"--model {name}: cannot load the model from this directory ({first}); it needs config.json, the "
        "weights and (without --token-ids) the tokenizer files"
    )


def _load(args: argparse.Namespace, torch: Any, transformers: Any) -> tuple[Any, Any]:
    """(model, tokenizer or None) from local files only: a directory or the local HF cache."""
    name = args.model
    path = Path(name).expanduser()
    local = path.exists()
    if local and not path.is_dir():
        raise CollectError(f"--model {name}: is a file; give the model's directory")
    if not local and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        raise CollectError(f"--model {name}: no such directory")
    where = str(path) if local else name
    try:
        config = transformers.AutoConfig.from_pretrained(where, local_files_only=True)
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err, local) from None
    router_rule(config)  # fail fast, before loading weights
    tokenizer = None
    try:
        if not args.token_ids:
            tokenizer = transformers.AutoTokenizer.from_pretrained(where, local_files_only=True)
        major, minor = (int(part) for part in transformers.__version__.split(".")[:2])
        dtype_key = "dtype" if (major, minor) >= (4, 56) else "torch_dtype"
        model = transformers.AutoModelForCausalLM.from_pretrained(
            where, local_files_only=True, **{dtype_key: getattr(torch, args.dtype)}
        )
    except (OSError, ValueError, KeyError) as err:
        raise _load_error(name, err, True) from None
    return model.to(args.device), tokenizer


def collect_main(argv: Sequence[str] | None = None) -> int:
    """``moesim trace collect``: record a model's routing, write the trace, print its statistics."""
    try:
        args = _collect_parser().parse_args(argv)
        _check_out(args.out)
        try:
            torch, transformers = import_backend()
        except MissingDependencyError as err:
            raise UsageError(str(err)) from None
        data = _read_text(args.text, args.token_ids)
        if args.device is None:
            args.device = "cuda" if torch.cuda.is_available() else "cpu"
        elif args.device == "cuda" and not torch.cuda.is_available():
            raise UsageError("--device cuda: no CUDA device available to torch (use --device cpu)")
        model, tokenizer = _load(args, torch, transformers)
        start = time.perf_counter()
        trace = collect_trace(
            model,
            data if tokenizer is None else tokenizer,
            None if tokenizer is None else data,
            gpus=args.gpus,
            batch_tokens=args.batch_tokens,
            max_tokens=args.max_tokens,
            model_name=getattr(model.config, "name_or_path", "") or args.model,
            bytes_per_element=DTYPES[args.dtype],
            source=f"moesim trace collect --model {args.model} --text {args.text}",
            notes=f"text {args.text}{' (token ids)' * args.token_ids}; {args.dtype} on {args.device}",
        )
        elapsed = time.perf_counter() - start
        save_trace(trace, args.out)
    except SystemExit as done:  # --help
        return help_status(done)
    except (ValueError, OSError, RuntimeError) as err:
        return fail(err)
    print(
        f"wrote {args.out} ({trace.tokens} tokens, {trace.layers} MoE layers, collected in {elapsed:.2f} s)"
    )
    print(format_summary(summary(trace)))
    return 0
