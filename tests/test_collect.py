"""``moesim trace collect``: router choices of tiny random HF MoE models, recorded exactly; the CLI."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

if (
    os.environ.get("CI") == "true"
):  # .ci/run installs torch and transformers: a skip there would hide these tests
    import torch
    import transformers
else:
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")

from experiments.trace_commands import collect_main as main  # noqa: E402
from workloads import collect  # noqa: E402
from workloads.collect import CollectError, UnsupportedModelError, collect_trace  # noqa: E402
from workloads.routing_trace import load_trace  # noqa: E402

SMALL = dict(
    hidden_size=64,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_experts_per_tok=2,
    vocab_size=256,
    max_position_embeddings=128,
    bos_token_id=1,
    eos_token_id=2,
    pad_token_id=0,
)


def tiny(kind: str, **overrides: Any) -> Any:
    """A tiny randomly initialised MoE causal LM of the given model_type (seeded)."""
    torch.manual_seed(0)
    if kind == "mixtral":
        config = transformers.MixtralConfig(
            **SMALL, intermediate_size=128, num_hidden_layers=2, num_local_experts=8, **overrides
        )
        return transformers.MixtralForCausalLM(config)
    if kind == "qwen2_moe":  # 3 layers, the middle one dense: 2 MoE layers, each with a shared expert
        config = transformers.Qwen2MoeConfig(
            **SMALL, intermediate_size=128, moe_intermediate_size=32, shared_expert_intermediate_size=64,
            num_hidden_layers=3, num_experts=8, mlp_only_layers=[1], **overrides,
        )  # fmt: skip
        return transformers.Qwen2MoeForCausalLM(config)
    if kind == "olmoe":
        config = transformers.OlmoeConfig(
            **SMALL, intermediate_size=32, num_hidden_layers=2, num_experts=8, **overrides
        )
        return transformers.OlmoeForCausalLM(config)
    if kind == "qwen3_moe":
        config = transformers.Qwen3MoeConfig(
            **SMALL, intermediate_size=128, moe_intermediate_size=32, head_dim=16, num_hidden_layers=2,
            num_experts=8, **overrides,
        )  # fmt: skip
        return transformers.Qwen3MoeForCausalLM(config)
    raise AssertionError(kind)


def random_ids(n: int, seed: int = 1) -> Any:
    return torch.randint(0, 256, (n,), generator=torch.Generator().manual_seed(seed))


def _detached(out: Any) -> Any:
    if isinstance(out, tuple):
        return tuple(o.detach() if torch.is_tensor(o) else o for o in out)
    return out.detach()


class Witness:
    """Independent record of each router: its input hidden states and its own output."""

    def __init__(self, model: Any, block_class: str) -> None:
        self.blocks = [m for m in model.modules() if type(m).__name__ == block_class]
        self.inputs: list[list[Any]] = [[] for _ in self.blocks]
        self.outputs: list[list[Any]] = [[] for _ in self.blocks]
        self.handles = []
        for i, block in enumerate(self.blocks):
            self.handles.append(block.gate.register_forward_pre_hook(self._pre(i)))
            self.handles.append(block.gate.register_forward_hook(self._post(i)))

    def _pre(self, i: int) -> Any:
        return lambda module, args: self.inputs[i].append(args[0].detach().clone())

    def _post(self, i: int) -> Any:
        return lambda module, args, out: self.outputs[i].append(_detached(out))

    @torch.no_grad()
    def recompute(self, top_k: int, renormalize: bool) -> tuple[np.ndarray, np.ndarray]:
        """(layers, tokens, k) ids and weights: the gate weight applied to the captured inputs, by hand.

        The rule of the transformers sources: softmax in float32 over the experts, topk, optional
        renormalisation.
        """
        ids, weights = [], []
        for i, block in enumerate(self.blocks):
            hidden = torch.cat([h.reshape(-1, h.shape[-1]) for h in self.inputs[i]])
            logits = torch.nn.functional.linear(hidden, block.gate.weight)
            probs = torch.nn.functional.softmax(logits, dim=-1, dtype=torch.float)
            w, e = torch.topk(probs, top_k, dim=-1)
            if renormalize:
                w = w / w.sum(dim=-1, keepdim=True)
            ids.append(e.numpy())
            weights.append(w.numpy())
        return np.stack(ids), np.stack(weights)

    def own_indices(self) -> np.ndarray | None:
        """The routers' own returned indices (transformers >= 5 routers return them), else None."""
        if not all(isinstance(o, tuple) and len(o) >= 3 for outs in self.outputs for o in outs):
            return None
        return np.stack([torch.cat([o[2] for o in outs]).numpy() for outs in self.outputs])

    def close(self) -> None:
        for handle in self.handles:
            handle.remove()


CASES = [
    ("mixtral", {}, True),
    ("qwen2_moe", {"norm_topk_prob": True}, True),
    ("qwen2_moe", {"norm_topk_prob": False}, False),
    ("olmoe", {"norm_topk_prob": False}, False),
    ("olmoe", {"norm_topk_prob": True}, True),
    ("qwen3_moe", {"norm_topk_prob": True}, True),
]


@pytest.mark.parametrize(("kind", "overrides", "renormalized"), CASES)
def test_records_the_routers_own_choice(kind: str, overrides: dict[str, Any], renormalized: bool) -> None:
    model = tiny(kind, **overrides)
    rule = collect.ROUTERS[kind]
    witness = Witness(model, rule.block_class)
    try:
        trace = collect_trace(model, random_ids(300), gpus=4, batch_tokens=128)
    finally:
        witness.close()
    moe_layers = 2
    assert trace.experts.shape == (moe_layers, 300, 2) and trace.gates.shape == (moe_layers, 300, 2)
    assert (trace.layers, trace.num_experts, trace.top_k) == (moe_layers, 8, 2)
    assert (trace.hidden, trace.bytes_per_element, trace.gpus) == (64, 4, 4)
    assert trace.gates.dtype == np.float32
    ids, weights = witness.recompute(2, renormalized)
    np.testing.assert_array_equal(trace.experts, ids)  # exactly the same experts, same slot order
    np.testing.assert_allclose(trace.gates, weights, rtol=1e-5, atol=1e-6)
    assert (np.diff(trace.gates, axis=2) <= 0).all()  # slot 0 = the highest weight
    own = witness.own_indices()
    if own is not None:  # the router's own top-k (transformers >= 5)
        np.testing.assert_array_equal(trace.experts, own)
    sums = trace.gates.sum(axis=2)
    if renormalized:
        np.testing.assert_allclose(sums, 1.0, rtol=1e-6)
    else:
        assert (sums < 1.0).all()
    assert len(set(trace.experts[0].ravel().tolist())) > 2  # the routing is not degenerate
    assert ("shared expert" in trace.notes) == (kind == "qwen2_moe")


def test_layout_batches_and_gpus() -> None:
    trace = collect_trace(tiny("mixtral"), random_ids(300), gpus=4, batch_tokens=128)
    assert np.bincount(trace.batch).tolist() == [128, 128, 44]
    assert trace.source_gpu[:128].tolist() == np.repeat(np.arange(4), 32).tolist()
    assert trace.source_gpu[256:].tolist() == [0] * 11 + [1] * 11 + [2] * 11 + [3] * 11
    assert trace.tokens_per_gpu.tolist() == [75, 75, 75, 75]
    assert trace.model == "mixtral" and trace.source == "moesim trace collect"
    assert "300 tokens in 3 forward chunks" in trace.notes

    capped = collect_trace(tiny("mixtral"), random_ids(300), gpus=3, batch_tokens=100, max_tokens=250)
    assert capped.tokens == 250 and np.bincount(capped.batch).tolist() == [100, 100, 50]
    assert capped.tokens_per_gpu.tolist() == [34 + 34 + 17, 33 + 33 + 17, 33 + 33 + 16]


def test_chunks_are_independent_sequences() -> None:
    """Each chunk restarts at position 0: two identical chunks route identically."""
    ids = random_ids(64)
    trace = collect_trace(tiny("olmoe"), torch.cat([ids, ids]), gpus=2, batch_tokens=64)
    np.testing.assert_array_equal(trace.experts[:, :64], trace.experts[:, 64:])


def test_bf16_model_and_training_mode_restored() -> None:
    model = tiny("qwen2_moe").to(torch.bfloat16).train()
    trace = collect_trace(model, random_ids(100).tolist(), gpus=2, batch_tokens=64, model_name="q")
    assert trace.bytes_per_element == 2 and trace.gates.dtype == np.float32 and trace.model == "q"
    assert model.training
    assert all(h == {} for m in model.modules() for h in (m._forward_hooks,))  # hooks removed


def test_a_tokenizer_and_bos(word_tokenizer: Any) -> None:
    text = "the cat sat on the mat " * 50  # 300 words
    trace = collect_trace(tiny("mixtral"), word_tokenizer, text, gpus=2, batch_tokens=101)
    assert trace.tokens == 300 + 3 and np.bincount(trace.batch).tolist() == [101, 101, 101]
    starts = trace.experts[:, [0, 101, 202]]  # every chunk starts with BOS at position 0
    assert (starts == starts[:, :1]).all()
    no_bos = collect_trace(tiny("mixtral"), word_tokenizer, text, gpus=2, batch_tokens=100, add_bos=False)
    assert no_bos.tokens == 300


def test_library_errors() -> None:
    model = tiny("mixtral")
    with pytest.raises(CollectError, match="outside the model's vocabulary"):
        collect_trace(model, [1, 2, 256])
    assert (
        collect_trace(model, random_ids(300)).batch.tolist() == np.repeat([0, 1, 2], [128, 128, 44]).tolist()
    )
    with pytest.raises(CollectError, match="max_position_embeddings=128"):
        collect_trace(model, [1, 2, 3], batch_tokens=512)
    with pytest.raises(CollectError, match="no tokens"):
        collect_trace(model, [], batch_tokens=64)
    with pytest.raises(CollectError, match="gpus must be"):
        collect_trace(model, [1, 2], gpus=0, batch_tokens=64)
    with pytest.raises(CollectError, match="1-D integer"):
        collect_trace(model, [[1, 2]], batch_tokens=64)
    with pytest.raises(CollectError, match="text is only used with a tokenizer"):
        collect_trace(model, [1, 2], "text", batch_tokens=64)
    torch.manual_seed(0)
    llama = transformers.LlamaForCausalLM(
        transformers.LlamaConfig(**{k: v for k, v in SMALL.items() if k != "num_experts_per_tok"},
                                 intermediate_size=64, num_hidden_layers=1)
    )  # fmt: skip
    with pytest.raises(UnsupportedModelError) as err:
        collect_trace(llama, [1, 2], batch_tokens=64)
    assert str(err.value) == (
        "model_type llama has no known MoE router; supported: mixtral, qwen2_moe, olmoe, qwen3_moe"
    )


def test_a_router_that_disagrees_with_the_rule_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny("mixtral")
    if isinstance(model.model.layers[0].mlp.gate, torch.nn.Linear):
        pytest.skip("transformers < 5: the router returns logits only, there is nothing to compare with")

    def reversed_rule(logits: Any, top_k: int, renormalize: bool) -> tuple[Any, Any]:
        weights, ids = torch.topk(torch.softmax(logits.float(), dim=-1), top_k, dim=-1, largest=False)
        return weights, ids

    monkeypatch.setattr(collect, "route_from_logits", reversed_rule)
    with pytest.raises(CollectError, match="chose other experts than softmax"):
        collect_trace(model, random_ids(50), batch_tokens=64)


# ----------------------------------------------------------------------------------------------
# command line


@pytest.fixture(scope="module")
def word_tokenizer() -> Any:
    """A word-level fast tokenizer built offline: [PAD]=0, [BOS]=1, [EOS]=2, [UNK]=3, then words."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words = "the cat sat on mat a of and to in is it".split()
    vocab = {w: i for i, w in enumerate(["[PAD]", "[BOS]", "[EOS]", "[UNK]", *words])}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    return transformers.PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="[UNK]", bos_token="[BOS]", eos_token="[EOS]", pad_token="[PAD]"
    )


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, word_tokenizer: Any) -> Path:
    path = tmp_path_factory.mktemp("tiny-mixtral")
    tiny("mixtral").save_pretrained(path)
    word_tokenizer.save_pretrained(path)
    return path


def test_cli_round_trip(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat on the mat and it is a cat\n" * 20, encoding="utf-8")  # 220 words
    out = tmp_path / "t.npz"
    argv = ["--model", str(model_dir), "--text", str(text), "--out", str(out), "--gpus", "4"]
    assert main([*argv, "--batch-tokens", "64", "--device", "cpu", "--dtype", "float32"]) == 0
    trace = load_trace(out)
    assert trace.tokens == 220 + 4 and trace.layers == 2 and trace.num_experts == 8 and trace.top_k == 2
    assert trace.bytes_per_element == 4 and trace.gpus == 4 and trace.gates is not None
    assert trace.model == str(model_dir) and str(text) in trace.source and "float32 on cpu" in trace.notes
    printed = capsys.readouterr().out
    assert f"wrote {out} (224 tokens, 2 MoE layers" in printed
    assert "imbalance" in printed and "affinity to next" in printed

    # the same model through the library gives the same trace
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, local_files_only=True)
    tokenizer = transformers.AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    again = collect_trace(model, tokenizer, text.read_text(), gpus=4, batch_tokens=64)
    np.testing.assert_array_equal(again.experts, trace.experts)


def test_cli_token_ids_and_bf16(model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    ids = tmp_path / "ids.txt"
    ids.write_text(" ".join(str(i) for i in random_ids(150).tolist()) + "\n", encoding="utf-8")
    out = tmp_path / "t.npz"
    argv = ["--model", str(model_dir), "--text", str(ids), "--out", str(out), "--token-ids"]
    assert main([*argv, "--batch-tokens", "100", "--max-tokens", "120", "--device", "cpu"]) == 0
    trace = load_trace(out)
    assert trace.tokens == 120 and trace.bytes_per_element == 2 and trace.gpus == 8
    assert np.bincount(trace.batch).tolist() == [100, 20] and "(token ids)" in trace.notes
    assert "wrote" in capsys.readouterr().out


def _config_only(path: Path, config: Any) -> Path:
    config.save_pretrained(path)
    return path


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("missing model dir", "no such directory"),
        ("uncached model name", "no model of that name in the local Hugging Face cache"),
        ("unsupported model", "model_type llama has no known MoE router; supported: mixtral"),
        ("missing text", "--text"),
        ("bad token ids", "is not a token id"),
        ("missing out dir", "does not exist"),
        ("bad arg", "--gpus"),
        ("too long chunks", "max_position_embeddings=128"),
    ],
)
def test_cli_errors(
    case: str, message: str, model_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    text = tmp_path / "text.txt"
    text.write_text("the cat sat\n", encoding="utf-8")
    args = {"--model": str(model_dir), "--text": str(text), "--out": str(tmp_path / "t.npz")}
    extra = ["--device", "cpu", "--batch-tokens", "64"]
    if case == "missing model dir":
        args["--model"] = str(tmp_path / "nope")
    elif case == "uncached model name":
        args["--model"] = "nobody-moesim/not-a-model"
    elif case == "unsupported model":
        args["--model"] = str(_config_only(tmp_path / "llama", transformers.LlamaConfig(num_hidden_layers=1)))
    elif case == "missing text":
        args["--text"] = str(tmp_path / "missing.txt")
    elif case == "bad token ids":
        extra.append("--token-ids")
    elif case == "missing out dir":
        args["--out"] = str(tmp_path / "no" / "t.npz")
    elif case == "bad arg":
        extra += ["--gpus", "0"]
    elif case == "too long chunks":
        extra += ["--batch-tokens", "4096"]
    argv = [part for pair in args.items() for part in pair] + extra
    assert main(argv) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("moesim: error:") and message in last, err
    assert err.count("moesim: error:") == 1 and not (tmp_path / "t.npz").exists()
    if case != "too long chunks":  # that one fails after loading the model (its loading progress bar)
        assert err.count("\n") == 1, err


def test_cli_without_torch_or_transformers(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)  # import transformers -> ImportError
    argv = ["--model", "x", "--text", str(tmp_path / "t.txt"), "--out", str(tmp_path / "t.npz")]
    assert main(argv) == 2
    assert capsys.readouterr().err == (
        "moesim: error: trace collect needs torch and transformers (pip install 'moesim[collect]')\n"
    )
