"""Record a Hugging Face MoE model's router choices as a routing trace (``moesim trace collect``).

:func:`collect_trace` runs a loaded ``transformers`` MoE model forward over token ids and records,
through forward hooks on the router ("gate") module of every sparse MoE block, which ``top_k``
experts each token is sent to and with which weight. The result is a
:class:`~workloads.routing_trace.RoutingTrace` (see ``routing_trace`` for the file format);
:func:`main` is the command line, which loads the model and tokenizer from local files only.

Supported models, dispatched on ``config.model_type`` (the sparse block class in parentheses):

- ``mixtral`` (``MixtralSparseMoeBlock``): softmax over the experts, top-k, the k weights always
  renormalised to sum to 1.
- ``qwen2_moe`` (``Qwen2MoeSparseMoeBlock``): softmax, top-k, renormalised only when
  ``config.norm_topk_prob``. The shared expert (``shared_expert``, gated by ``shared_expert_gate``)
  processes every token on the token's own GPU; it is not routed and not in the trace. Dense
  layers (``mlp_only_layers``, ``decoder_sparse_step``) have no router and are not trace layers.
- ``olmoe`` (``OlmoeSparseMoeBlock``) and ``qwen3_moe`` (``Qwen3MoeSparseMoeBlock``): as
  ``qwen2_moe`` without a shared expert.

How the choice is recorded: the hook takes the router logits from the gate's output (a
``Linear`` returning the logits in transformers 4.x; a ``*TopKRouter`` returning ``(logits,
weights, indices)`` in 5.x) and applies the model's own rule to them (:func:`route_from_logits`:
``softmax`` in float32 over the experts, ``torch.topk`` — slot 0 is the highest weight — and the
optional renormalisation), the same operations on the same tensor as the model, so the same
choice. Where the router also returns its own indices (transformers >= 5), they are compared
with the recomputed ones and any difference is an error (the rule would be out of date).

Token layout: the ids are run in forward chunks of at most ``batch_tokens`` tokens, each an
independent sequence of batch size 1 starting at position 0 (no KV cache between chunks); when a
tokenizer with a BOS token is given, every chunk starts with BOS (it counts towards
``batch_tokens``, and its routing is recorded like any token's). Chunk ``b`` is batch ``b`` of the
trace. Within a chunk of ``n`` tokens, token ``i`` starts on GPU ``i * gpus // n``: the chunk is
split into ``gpus`` contiguous, nearly equal parts, one per expert-parallel rank, in order (the
same batch-major, then GPU, order as ``synthetic_trace``). ``bytes_per_element`` is the element
size of the model's floating-point parameters (2 for bf16/fp16, 4 for fp32) unless given.

torch and transformers are imported lazily (the optional ``collect`` extra); this module imports
without them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from workloads.routing_trace import RoutingTrace

MISSING_DEPS = "trace collect needs torch and transformers (pip install 'moesim[collect]')"
DEFAULT_BATCH_TOKENS = 512
DTYPES = {"float32": 4, "bfloat16": 2, "float16": 2}


class CollectError(ValueError):
    """A model, token stream or argument that cannot be traced; the message is one line."""


class UnsupportedModelError(CollectError):
    """The model has no MoE router this module knows."""


class MissingDependencyError(ImportError):
    """torch or transformers is not installed."""


@dataclass(frozen=True)
class RouterRule:
    """How one model family routes: its sparse block class and its top-k rule.

    Attributes:
        model_type: ``config.model_type``.
        block_class: class name of the sparse MoE block (whose ``gate`` is the router).
        experts_attr: config attribute holding the number of routed experts.
        renormalize: ``True`` (always renormalise the top-k weights) or the name of the boolean
            config flag that says whether to.
        shared_expert: whether the block also has an unrouted shared expert.
    """

    model_type: str
    block_class: str
    experts_attr: str
    renormalize: bool | str
    shared_expert: bool = False

    def experts(self, config: Any) -> int:
        return int(getattr(config, self.experts_attr))

    def renormalizes(self, config: Any) -> bool:
        if isinstance(self.renormalize, bool):
            return self.renormalize
        return bool(getattr(config, self.renormalize, False))


ROUTERS: dict[str, RouterRule] = {
    rule.model_type: rule
    for rule in (
        RouterRule("mixtral", "MixtralSparseMoeBlock", "num_local_experts", True),
        RouterRule(
            "qwen2_moe", "Qwen2MoeSparseMoeBlock", "num_experts", "norm_topk_prob", shared_expert=True
        ),
        RouterRule("olmoe", "OlmoeSparseMoeBlock", "num_experts", "norm_topk_prob"),
        RouterRule("qwen3_moe", "Qwen3MoeSparseMoeBlock", "num_experts", "norm_topk_prob"),
    )
}


def router_rule(config: Any) -> RouterRule:
    """The :class:`RouterRule` of a model config; raises :class:`UnsupportedModelError`."""
    model_type = getattr(config, "model_type", None) or "(none)"
    rule = ROUTERS.get(model_type)
    if rule is None:
        raise UnsupportedModelError(
            f"model_type {model_type} has no known MoE router; supported: {', '.join(ROUTERS)}"
        )
    return rule


def import_backend() -> tuple[Any, Any]:
    try:
        import torch
        import transformers
    except ImportError:
        raise MissingDependencyError(MISSING_DEPS) from None
    return torch, transformers


def route_from_logits(logits: Any, top_k: int, renormalize: bool) -> tuple[Any, Any]:
    """The model's routing rule on router logits: ``(weights, ids)``, both (tokens, top_k).

    ``softmax`` over the last axis in float32, ``torch.topk`` (sorted: slot 0 is the largest),
    then, if ``renormalize``, the k weights divided by their sum. ``weights`` is float32.
    """
    torch, _ = import_backend()
    probs = torch.softmax(logits, dim=-1, dtype=torch.float32)
    weights, ids = torch.topk(probs, top_k, dim=-1)
    if renormalize:
        weights = weights / weights.sum(dim=-1, keepdim=True)
    return weights, ids


# ----------------------------------------------------------------------------------------------
# tokens


def _is_tokenizer(obj: Any) -> bool:
    return callable(getattr(obj, "encode", None)) and hasattr(obj, "convert_ids_to_tokens")


def _token_ids(tokenizer_or_ids: Any, text: str | None) -> tuple[np.ndarray, int | None]:
    """(ids, bos id or None) from a tokenizer and text, or from given ids."""
    if _is_tokenizer(tokenizer_or_ids):
        if text is None:
            raise CollectError("collect_trace: give the text to tokenize along with the tokenizer")
        ids = tokenizer_or_ids(text, add_special_tokens=False, verbose=False)["input_ids"]
        return np.asarray(ids, dtype=np.int64).reshape(-1), getattr(tokenizer_or_ids, "bos_token_id", None)
    if text is not None:
        raise CollectError("collect_trace: text is only used with a tokenizer (got token ids and text)")
    ids = tokenizer_or_ids
    if hasattr(ids, "detach"):  # a torch tensor
        ids = ids.detach().cpu().numpy()
    ids = np.asarray(ids)
    if ids.ndim != 1 or (ids.size and not np.issubdtype(ids.dtype, np.integer)):
        raise CollectError(
            f"token ids must be a 1-D integer sequence, got shape {ids.shape}, dtype {ids.dtype}"
        )
    return ids.astype(np.int64), None


def _chunks(ids: np.ndarray, bos: int | None, batch_tokens: int, max_tokens: int | None) -> list[np.ndarray]:
    """Forward chunks of at most ``batch_tokens`` tokens (each starting with ``bos`` if given)."""
    step = batch_tokens - (bos is not None)
    budget = max_tokens if max_tokens is not None else np.inf
    chunks: list[np.ndarray] = []
    start = 0
    while start < ids.size and budget > (bos is not None):
        take = int(min(step, ids.size - start, budget - (bos is not None)))
        body = ids[start : start + take]
        chunks.append(body if bos is None else np.concatenate([[bos], body]))
        start += take
        budget -= chunks[-1].size
    return chunks


# ----------------------------------------------------------------------------------------------
# collecting


def _whole(name: str, value: Any, low: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < low:
        raise CollectError(f"{name} must be a whole number >= {low}, got {value!r}")
    return int(value)


def _moe_blocks(model: Any, rule: RouterRule) -> list[Any]:
    blocks = [m for m in model.modules() if type(m).__name__ == rule.block_class]
    if not blocks:
        raise CollectError(
            f"model_type {rule.model_type}: no {rule.block_class} module found in the model (no MoE layers?)"
        )
    for block in blocks:
        if not hasattr(block, "gate"):
            raise CollectError(f"{rule.block_class} has no gate (router) module in this transformers version")
    return blocks


class _Recorder:
    """Forward hooks on the routers; per layer, the (ids, weights) of every call."""

    def __init__(self, torch: Any, top_k: int, experts: int, renormalize: bool) -> None:
        self.torch = torch
        self.top_k = top_k
        self.experts = experts
        self.renormalize = renormalize
        self.calls: list[list[tuple[np.ndarray, np.ndarray]]] = []
        self.mismatch: list[int] = []

    def hook(self, layer: int) -> Any:
        self.calls.append([])
        self.mismatch.append(0)

        def record(module: Any, inputs: Any, output: Any) -> None:
            logits = output[0] if isinstance(output, tuple | list) else output
            if logits.shape[-1] != self.experts:
                raise CollectError(
                    f"router of MoE layer {layer} gives {logits.shape[-1]} logits per token, "
                    f"but the config has {self.experts} experts"
                )
            logits = logits.reshape(-1, self.experts)
            weights, ids = route_from_logits(logits, self.top_k, self.renormalize)
            own = output[2] if isinstance(output, tuple | list) and len(output) >= 3 else None
            if self.torch.is_tensor(own) and own.shape == ids.shape:
                self.mismatch[layer] += int((own.to(ids.dtype) != ids).any(dim=-1).sum())
            self.calls[layer].append(
                (ids.to("cpu", self.torch.int32).numpy(), weights.to("cpu", self.torch.float32).numpy())
            )

        return record


def collect_trace(
    model: Any,
    tokenizer_or_ids: Any,
    text: str | None = None,
    *,
    gpus: int = 8,
    batch_tokens: int | None = None,
    max_tokens: int | None = None,
    add_bos: bool = True,
    model_name: str | None = None,
    bytes_per_element: int | None = None,
    source: str = "",
    notes: str = "",
) -> RoutingTrace:
    """Run ``model`` over tokens and record its routers' top-k choices as a routing trace.

    Args:
        model: a loaded ``transformers`` MoE model (``*ForCausalLM`` or its base model) of a
            supported ``model_type`` (see the module docstring). It is run in eval mode under
            ``torch.inference_mode`` on the device of its parameters; its training mode is restored.
        tokenizer_or_ids: a tokenizer (then ``text`` is required and tokenized without special
            tokens) or a 1-D sequence / array / tensor of token ids.
        text: the text, with a tokenizer.
        gpus: expert-parallel ranks the tokens start on (each chunk split evenly, in order).
        batch_tokens: tokens per forward chunk (= per trace batch), BOS included; default 512, or
            the model's ``max_position_embeddings`` if smaller. A larger value than that is an error.
        max_tokens: at most this many tokens in the trace (all when None).
        add_bos: with a tokenizer that has a BOS token, start every chunk with it.
        model_name: the trace's model name (default: ``config.name_or_path`` or the model type).
        bytes_per_element: element size of a token vector (default: the parameters' dtype size).
        source, notes: provenance stored in the trace (``notes`` is appended to a generated note).

    Raises:
        UnsupportedModelError: an unknown ``model_type``.
        CollectError: bad arguments, no tokens, token ids outside the vocabulary, no MoE blocks,
            or a router that chose differently from the rule (one-line messages).
        MissingDependencyError: torch or transformers missing.
    """
    torch, transformers = import_backend()
    config = model.config
    rule = router_rule(config)
    gpus = _whole("gpus", gpus)
    max_positions = getattr(config, "max_position_embeddings", None)
    if not isinstance(max_positions, int) or max_positions < 1:
        max_positions = None
    if batch_tokens is None:
        batch_tokens = min(DEFAULT_BATCH_TOKENS, max_positions or DEFAULT_BATCH_TOKENS)
    batch_tokens = _whole("batch_tokens", batch_tokens)
    if max_positions is not None and batch_tokens > max_positions:
        raise CollectError(
            f"batch_tokens={batch_tokens} exceeds the model's max_position_embeddings={max_positions}"
        )
    if max_tokens is not None:
        max_tokens = _whole("max_tokens", max_tokens)
    ids, bos = _token_ids(tokenizer_or_ids, text)
    bos = bos if add_bos else None
    if bos is not None and batch_tokens < 2:
        raise CollectError("batch_tokens must be >= 2 when every chunk starts with the BOS token")
    vocab = getattr(config, "vocab_size", None)
    if ids.size and (ids.min() < 0 or (isinstance(vocab, int) and ids.max() >= vocab)):
        bad = ids[(ids < 0) | (ids >= (vocab if isinstance(vocab, int) else np.inf))][0]
        raise CollectError(f"token id {bad} is outside the model's vocabulary [0, {vocab})")
    chunks = _chunks(ids, bos, batch_tokens, max_tokens)
    if not chunks:
        raise CollectError("no tokens to run (the text is empty or max_tokens is too small)")

    experts, top_k = rule.experts(config), int(config.num_experts_per_tok)
    renormalize = rule.renormalizes(config)
    blocks = _moe_blocks(model, rule)
    params = [p for p in model.parameters() if p.is_floating_point()]
    device = params[0].device if params else torch.device("cpu")
    if bytes_per_element is None:
        bytes_per_element = params[0].dtype.itemsize if params else 4
    recorder = _Recorder(torch, top_k, experts, renormalize)
    handles = [block.gate.register_forward_hook(recorder.hook(i)) for i, block in enumerate(blocks)]
    runner = getattr(model, "base_model", model)  # skip the LM head: only the routers matter
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode():
            for number, chunk in enumerate(chunks):
                runner(input_ids=torch.as_tensor(chunk, device=device)[None, :], use_cache=False)
                _check_calls(recorder, number, chunk.size)
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    bad = [layer for layer, count in enumerate(recorder.mismatch) if count]
    if bad:
        raise CollectError(
            f"the router of MoE layer {bad[0]} chose other experts than softmax+top-k on its logits for "
            f"{recorder.mismatch[bad[0]]} tokens: this transformers {transformers.__version__} routes "
            f"{rule.model_type} differently from moesim's rule"
        )

    expert_ids = np.stack([np.concatenate([c[0] for c in calls]) for calls in recorder.calls])
    gates = np.stack([np.concatenate([c[1] for c in calls]) for calls in recorder.calls])
    sizes = np.array([chunk.size for chunk in chunks])
    batch = np.repeat(np.arange(len(chunks), dtype=np.int32), sizes)
    source_gpu = np.concatenate([np.arange(n) * gpus // n for n in sizes]).astype(np.int32)
    generated = (
        f"{int(sizes.sum())} tokens in {len(chunks)} forward chunks of <= {batch_tokens} tokens"
        f"{' (each starting with BOS)' if bos is not None else ''}; top-{top_k} of softmax(router logits)"
        f"{', renormalised' if renormalize else ', not renormalised'}; each chunk split evenly over "
        f"{gpus} GPUs in order"
        f"{'; shared expert not routed, not in the trace' if rule.shared_expert else ''}; "
        f"torch {torch.__version__}, transformers {transformers.__version__}"
    )
    return RoutingTrace(
        experts=expert_ids,
        gates=gates,
        source_gpu=source_gpu,
        batch=batch,
        num_experts=experts,
        top_k=top_k,
        layers=len(blocks),
        gpus=gpus,
        hidden=int(config.hidden_size),
        bytes_per_element=int(bytes_per_element),
        model=model_name or getattr(config, "name_or_path", "") or rule.model_type,
        source=source or "moesim trace collect",
        notes=f"{generated}; {notes}" if notes else generated,
    )


def _check_calls(recorder: _Recorder, chunk: int, tokens: int) -> None:
    for layer, calls in enumerate(recorder.calls):
        if len(calls) != chunk + 1 or calls[-1][0].shape[0] != tokens:
            raise CollectError(
                f"the router of MoE layer {layer} ran {len(calls) - chunk} time(s) on forward chunk {chunk} "
                f"(expected once on its {tokens} tokens)"
            )
