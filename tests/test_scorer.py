"""The P2L scorer against an independent reference, the input builder, the checkpoint format."""

from __future__ import annotations

import functools
import json
import os
import shutil
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np
import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoConfig, AutoModel, AutoTokenizer

from router.errors import InvalidRequestError
from router.scoring import ModelLoadError, load_p2l, user_turns, write_tiny_checkpoint
from router.scoring.checkpoint import resolve_head
from router.scoring.modeling import P2LForPromptRanking, P2LOutput, find_cls_positions

MODELS = ["gpt-4o-2024-08-06", "claude-3-5-sonnet-20241022", "llama-3.1-8b", "gemini-1.5-pro"]
PROMPTS = [
    [{"role": "user", "content": "hi!"}],
    [{"role": "user", "content": "Write a haiku about autumn leaves falling in the rain."}],
    [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "Solve for x: 3x + 7 = 22."},
        {"role": "assistant", "content": "x = 5"},
        {"role": "user", "content": "Now explain each step, please, in detail."},
    ],
    [{"role": "user", "content": [{"type": "text", "text": "SELECT name FROM t;"}]}],
]


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[tuple[str, str], Path]:
    root = tmp_path_factory.mktemp("p2l")
    return {
        (bb, head): write_tiny_checkpoint(
            root / f"{bb}-{head}", MODELS, backbone=bb, head=head, seed=i
        )
        for i, (bb, head) in enumerate(
            (bb, h) for bb in ("qwen2", "llama") for h in ("bt", "rk", "grk")
        )
    }


@pytest.fixture(scope="module")
def qwen_grk(checkpoints):
    return load_p2l(str(checkpoints["qwen2", "grk"]), device="cpu")


# -- an independent reference: transformers + safetensors + docs/DESIGN.md's formulas --


@functools.cache
def _reference_parts(folder: Path) -> tuple:
    config = AutoConfig.from_pretrained(folder)
    backbone = AutoModel.from_config(config, attn_implementation="eager", dtype=torch.float32)
    state = load_file(str(folder / "model.safetensors"))
    backbone.load_state_dict(
        {k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")}
    )
    return backbone.eval(), state, AutoTokenizer.from_pretrained(folder)


def reference(folder: Path, user_texts: list[str]) -> tuple[np.ndarray, float | None]:
    backbone, state, tok = _reference_parts(folder)
    text = "".join(f"<|im_start|>user\n{t}<|im_end|>\n" for t in user_texts) + "<|cls|>"
    ids = tok(text)["input_ids"]
    with torch.no_grad():
        hidden = backbone(input_ids=torch.tensor([ids])).last_hidden_state[0]
    h = hidden[ids.index(tok.convert_tokens_to_ids("<|cls|>"))].double()
    beta = h @ state["head.head.weight"].double().T + state["head.head.bias"].double()
    eta = None
    if "head.eta_head.weight" in state:
        eta = float(
            h @ state["head.eta_head.weight"].double()[0] + state["head.eta_head.bias"].double()[0]
        )
    return beta.numpy(), eta


def reference_probs(head: str, beta: np.ndarray, eta: float | None, i: int, j: int) -> tuple:
    """P(i wins), P(j wins), P(tie), P(bad) straight from docs/DESIGN.md ("P2L facts the
    scorer must reproduce": "Heads"), with torch."""
    b = torch.tensor(beta, dtype=torch.float64)
    if head == "bt":
        p = torch.sigmoid(b[i] - b[j])
        return float(p), float(1 - p), 0.0, None
    e = torch.tensor(eta, dtype=torch.float64)
    if head == "rk":
        eta_t = torch.clamp(torch.nn.functional.softplus(e - 22.5, beta=0.1), min=0.02)
        pa, pb = torch.sigmoid(b[i] - b[j] - eta_t), torch.sigmoid(b[j] - b[i] - eta_t)
        return float(pa), float(pb), float(1 - pa - pb), None
    theta, phi = torch.exp(e) + 1.000001, torch.exp(b)
    pa = phi[i] / (phi[i] + theta * phi[j] + 1)
    pb = phi[j] / (phi[j] + theta * phi[i] + 1)
    bad = 1 / (1 + phi[i] + phi[j])
    return float(pa), float(pb), float(1 - pa - pb - bad), float(bad)


@pytest.mark.parametrize("backbone", ["qwen2", "llama"])
@pytest.mark.parametrize("head", ["bt", "rk", "grk"])
def test_scorer_matches_independent_reference(checkpoints, backbone, head):
    from router.policy.outcomes import pairwise

    folder = checkpoints[backbone, head]
    model = load_p2l(str(folder), device="cpu")
    assert model.head == head and model.dtype == "float32" and model.device == "cpu"
    assert model.model_list == tuple(sorted(MODELS))
    coefs, etas = model.forward([model.render(p) for p in PROMPTS])  # one batch, padded
    assert coefs.dtype == np.float64 and coefs.shape == (len(PROMPTS), len(MODELS))
    for row, prompt in enumerate(PROMPTS):
        texts = [t["content"] for t in user_turns(prompt)]
        beta, eta = reference(folder, texts)
        assert np.max(np.abs(coefs[row] - beta)) <= 1e-4
        assert np.std(beta) > 0.05  # the heads are not degenerate
        if head == "bt":
            assert etas is None
        else:
            assert abs(etas[row] - eta) <= 1e-4
        probs = pairwise(head, coefs[row], None if etas is None else etas[row])
        pa, pb, tie, bad = reference_probs(head, beta, eta, 0, 2)
        assert probs["win"][0, 2] == pytest.approx(pa, abs=1e-4)
        assert probs["win"][2, 0] == pytest.approx(pb, abs=1e-4)
        assert probs["tie"][0, 2] == pytest.approx(tie, abs=1e-4)
        if bad is not None:
            assert probs["bad"][0, 2] == pytest.approx(bad, abs=1e-4)


# -- input builder --------------------------------------------------------------------------


def test_one_turn_renders_exactly(qwen_grk):
    text = qwen_grk.render([{"role": "user", "content": "hi!"}])
    assert text == "<|im_start|>user\nhi!<|im_end|>\n<|cls|>"


def test_only_user_turns_in_order_and_content_parts(qwen_grk):
    messages = [
        {"role": "system", "content": "sys"},
        {"role": "user", "content": "first"},
        {"role": "assistant", "content": "answer"},
        {"role": "tool", "content": "tool output", "tool_call_id": "x"},
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "look at"},
                {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                {"type": "text", "text": "this"},
            ],
        },
    ]
    assert user_turns(messages) == [
        {"role": "user", "content": "first"},
        {"role": "user", "content": "look at\nthis"},
    ]
    assert qwen_grk.render(messages) == (
        "<|im_start|>user\nfirst<|im_end|>\n<|im_start|>user\nlook at\nthis<|im_end|>\n<|cls|>"
    )


def test_cls_literal_in_user_text_is_neutralised(qwen_grk):
    text = qwen_grk.render([{"role": "user", "content": "a <|cls|> b <|cls|>"}])
    assert text == "<|im_start|>user\na <cls> b <cls><|im_end|>\n<|cls|>"
    ids, _ = qwen_grk.encode([text])
    cls_id = qwen_grk.tokenizer.convert_tokens_to_ids("<|cls|>")
    assert ids[0].count(cls_id) == 1 and ids[0][-1] == cls_id


@pytest.mark.parametrize(
    "messages, fragment",
    [
        ("hello", "array"),
        ([], "at least one user message"),
        ([{"role": "system", "content": "only system"}], "at least one user message"),
        ([{"content": "no role"}], "messages[0]"),
        (["a string"], "messages[0]"),
        ([{"role": "user", "content": None}], "messages[0].content"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "text"),
        ([{"role": "user", "content": [{"text": "no type"}]}], "messages[0].content[0]"),
        ([{"role": "user", "content": [{"type": "text", "text": 3}]}], "messages[0].content[0]"),
    ],
)
def test_bad_messages_are_invalid_requests(messages, fragment):
    with pytest.raises(InvalidRequestError) as info:
        user_turns(messages)
    assert info.value.param == "messages" and info.value.status == 400
    assert fragment in info.value.message


def test_long_prompt_is_truncated_from_the_left(checkpoints):
    model = load_p2l(str(checkpoints["qwen2", "bt"]), device="cpu", max_length=64)
    long_text = model.render([{"role": "user", "content": "the quick brown fox " * 100}])
    short_text = model.render([{"role": "user", "content": "hi!"}])
    (long_ids, short_ids), full = model.encode([long_text, short_text])
    cls_id = model.tokenizer.convert_tokens_to_ids("<|cls|>")
    assert len(long_ids) == 64 and long_ids[-1] == cls_id
    assert full[0] > 300 and full[1] == len(short_ids)
    untruncated = model.tokenizer(long_text)["input_ids"]
    assert long_ids == untruncated[-64:]
    coefs, _ = model.forward([long_text, short_text])
    assert np.isfinite(coefs).all()
    assert model.cls_positions([long_ids, short_ids]) == [63, len(short_ids) - 1]
    with pytest.raises(ValueError, match="no CLS"):
        model.cls_positions([long_ids[:-1]])


# -- checkpoint format and loading ------------------------------------------------------------


def test_tiny_checkpoint_is_the_real_format(checkpoints):
    for (backbone, head), folder in checkpoints.items():
        names = {p.name for p in folder.iterdir()}
        assert {"config.json", "model_list.json", "model.safetensors", "tokenizer.json"} <= names
        assert ("training_config.json" in names) == (head != "bt")
        assert json.loads((folder / "model_list.json").read_text()) == sorted(MODELS)
        assert json.loads((folder / "config.json").read_text())["model_type"] == backbone
        keys = set(load_file(str(folder / "model.safetensors")))
        assert {"head.head.weight", "head.head.bias"} <= keys
        assert ("head.eta_head.weight" in keys) == (head != "bt")
        assert all(k.startswith(("model.", "head.head.", "head.eta_head.")) for k in keys)
        tok = AutoTokenizer.from_pretrained(folder)
        assert tok.cls_token == "<|cls|>" and tok.pad_token is not None
        for special in ("<|im_start|>", "<|im_end|>", "<|endoftext|>", "<|cls|>"):
            assert special in tok.get_vocab()
            assert len(tok(special, add_special_tokens=False)["input_ids"]) == 1


def test_tokenizer_reloads_identically(checkpoints, tmp_path):
    for backbone in ("qwen2", "llama"):
        folder = checkpoints[backbone, "grk"]
        tok = AutoTokenizer.from_pretrained(folder)
        tok.save_pretrained(tmp_path / backbone)
        again = AutoTokenizer.from_pretrained(tmp_path / backbone)
        text = "Héllo  wörld!\n\n  def f(x): return x's 12345 ✓ <|im_end|><|cls|>"
        assert tok(text)["input_ids"] == again(text)["input_ids"]
        assert tok.decode(tok(text)["input_ids"]) == text
        assert tok.chat_template == again.chat_template


def test_head_type_resolution():
    assert resolve_head(False, None, None) == "bt"
    assert resolve_head(False, {"loss_type": "bag"}, None) == "bt"
    assert resolve_head(True, None, None) == "rk"
    assert resolve_head(True, {"head_type": "rk", "loss_type": "bag"}, None) == "grk"
    assert resolve_head(True, {"loss_type": "grk"}, None) == "grk"
    assert resolve_head(True, {"loss_type": "rk"}, None) == "rk"
    assert resolve_head(True, {"loss_type": "rk"}, "grk") == "grk"
    assert resolve_head(True, None, "bt") == "bt"
    with pytest.raises(ModelLoadError, match="eta_head"):
        resolve_head(False, None, "grk")
    with pytest.raises(ModelLoadError, match="loss_type"):
        resolve_head(True, {"loss_type": "weird"}, None)


def test_head_override_and_missing_training_config(checkpoints, tmp_path):
    folder = shutil.copytree(checkpoints["llama", "grk"], tmp_path / "no-tc")
    (folder / "training_config.json").unlink()
    assert load_p2l(str(folder), device="cpu").head == "rk"
    assert load_p2l(str(folder), device="cpu", head="grk").head == "grk"
    bt = load_p2l(str(folder), device="cpu", head="bt")
    assert bt.head == "bt" and bt.forward([bt.render(PROMPTS[0])])[1] is None


def test_model_list_head_mismatch_is_refused(checkpoints, tmp_path):
    folder = shutil.copytree(checkpoints["qwen2", "rk"], tmp_path / "mismatch")
    (folder / "model_list.json").write_text(json.dumps(sorted(MODELS)[:3]))
    with pytest.raises(ModelLoadError, match="3 models but the head has 4 outputs"):
        load_p2l(str(folder), device="cpu")


def test_missing_model_offline_points_at_the_fix(monkeypatch, tmp_path):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as info:
        load_p2l("nobody-here/p2l-not-a-real-checkpoint", device="cpu")
    message = str(info.value)
    assert (
        "--p2l-model" in message and "p2l-router demo" in message and "offline" in message.lower()
    )
    with pytest.raises(ModelLoadError, match="does not exist"):
        load_p2l(str(tmp_path / "nothing-here"), device="cpu")
    with pytest.raises(ModelLoadError, match="config.json"):
        load_p2l(str(tmp_path), device="cpu")


def test_wrong_shapes_in_weights_are_refused(checkpoints, tmp_path):
    folder = shutil.copytree(checkpoints["qwen2", "bt"], tmp_path / "wide")
    config = json.loads((folder / "config.json").read_text())
    config["intermediate_size"] *= 2
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="shape"):
        load_p2l(str(folder), device="cpu")


def test_count_tokens_and_dtype(qwen_grk, checkpoints):
    assert qwen_grk.count_tokens("hi!") == len(qwen_grk.tokenizer("hi!")["input_ids"]) > 0
    bf16 = load_p2l(str(checkpoints["qwen2", "grk"]), device="cpu", dtype="bfloat16")
    assert bf16.dtype == "bfloat16"
    c32, _ = qwen_grk.forward([qwen_grk.render(PROMPTS[1])])
    c16, _ = bf16.forward([bf16.render(PROMPTS[1])])
    assert c16.dtype == np.float64 and np.max(np.abs(c16 - c32)) < 0.1
    with pytest.raises(ModelLoadError, match="dtype"):
        load_p2l(str(checkpoints["qwen2", "grk"]), device="cpu", dtype="int3")


# -- the network, the transformers way ----------------------------------------------------------


def test_network_is_the_head_over_the_hidden_state_at_the_cls(qwen_grk, checkpoints):
    net = qwen_grk.network
    assert isinstance(net, P2LForPromptRanking) and not net.training
    state = load_file(str(checkpoints["qwen2", "grk"] / "model.safetensors"))
    assert set(net.state_dict()) == set(state)  # model.*, head.head.*, head.eta_head.*
    ids, _ = qwen_grk.encode([qwen_grk.render(p) for p in PROMPTS])
    width = max(map(len, ids))
    pad = qwen_grk.tokenizer.pad_token_id
    input_ids = torch.tensor([row + [pad] * (width - len(row)) for row in ids])
    cls = [len(row) - 1 for row in ids]  # the renderer puts the CLS last
    with torch.no_grad():
        out = net(input_ids=input_ids)  # positions found from config.cls_token_id
        hidden = net.model(input_ids=input_ids).last_hidden_state
    assert isinstance(out, P2LOutput)
    for r, pos in enumerate(cls):
        h = hidden[r, pos].double()
        beta = h @ state["head.head.weight"].double().T + state["head.head.bias"].double()
        eta = h @ state["head.eta_head.weight"].double()[0] + state["head.eta_head.bias"].double()
        assert torch.equal(out.pooled[r], hidden[r, pos])
        assert torch.allclose(out.coefs[r].double(), beta, atol=1e-5)
        assert torch.allclose(out.eta[r, 0].double(), eta, atol=1e-5)
    coefs, etas = qwen_grk.forward_ids(ids)  # the serving path: positions passed in
    np.testing.assert_allclose(coefs, out.coefs.double().numpy(), atol=1e-5)
    np.testing.assert_allclose(etas, out.eta[:, 0].double().numpy(), atol=1e-5)
    no_cls = input_ids.clone()
    no_cls[1, cls[1]] = pad
    with pytest.raises(ValueError, match="row 1 has no CLS"):
        net(input_ids=no_cls)
    cls_id = net.config.cls_token_id
    assert find_cls_positions(torch.tensor([[cls_id, 5, cls_id, 7]]), cls_id).tolist() == [2]


def _published_layout(folder: Path) -> None:
    """Make a tiny checkpoint look like lmarena-ai/p2l-7b-grk-01112025 on disk: the paper's
    class in ``architectures``, a 4.x-era Qwen2 config, weights in shards with an index."""
    from huggingface_hub import save_torch_state_dict

    config = json.loads((folder / "config.json").read_text())
    rope = config.pop("rope_parameters")  # 4.x wrote rope_theta at the top level
    config.update(
        architectures=["P2LModel"],
        torch_dtype="bfloat16",
        transformers_version="4.47.1",
        rope_theta=rope["rope_theta"],
        rope_scaling=None,
        sliding_window=131072,
        use_sliding_window=False,
        use_cache=False,
    )
    (folder / "config.json").write_text(json.dumps(config, indent=2))
    state = load_file(str(folder / "model.safetensors"))
    (folder / "model.safetensors").unlink()
    save_torch_state_dict(state, folder, max_shard_size="40KB")


def test_sharded_published_layout_loads_the_same(checkpoints, qwen_grk, tmp_path):
    folder = shutil.copytree(checkpoints["qwen2", "grk"], tmp_path / "published")
    _published_layout(folder)
    shards = sorted(p.name for p in folder.glob("model-*.safetensors"))
    assert len(shards) > 2 and (folder / "model.safetensors.index.json").is_file()
    model = load_p2l(str(folder), device="cpu")
    assert model.head == "grk" and model.dtype == "float32"  # CPU default, not config's bf16
    texts = [model.render(p) for p in PROMPTS]
    np.testing.assert_allclose(model.forward(texts)[0], qwen_grk.forward(texts)[0], atol=1e-6)


def test_dtype_is_respected_by_every_weight(checkpoints):
    folder = str(checkpoints["llama", "rk"])
    for dtype, expected in ((None, torch.float32), ("bf16", torch.bfloat16)):
        model = load_p2l(folder, device="cpu", dtype=dtype)
        assert {p.dtype for p in model.network.parameters()} == {expected}
        assert model.dtype == str(expected).removeprefix("torch.")


@pytest.mark.parametrize(
    "change, fragment",
    [
        ({"add": "head.gamma_head.weight"}, "unexpected ['head.gamma_head.weight']"),
        ({"drop": "head.head.bias"}, "only one of head.head.weight and head.head.bias"),
        ({"drop": "head.eta_head.weight"}, "only one of head.eta_head.weight"),
        ({"drop": "head.head.weight"}, "not a P2L head"),
        ({"add": "model.layers.0.extra.weight"}, "unexpected ['model.layers.0.extra.weight']"),
        ({"drop": "model.norm.weight"}, "missing ['model.norm.weight']"),
    ],
)
def test_extra_or_missing_weights_are_refused(checkpoints, tmp_path, change, fragment):
    from safetensors.torch import save_file

    folder = shutil.copytree(checkpoints["qwen2", "rk"], tmp_path / "bad")
    state = load_file(str(folder / "model.safetensors"))
    if "add" in change:
        state[change["add"]] = torch.zeros(1, state["head.head.weight"].shape[1])
    else:
        del state[change["drop"]]
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    with pytest.raises(ModelLoadError) as info:
        load_p2l(str(folder), device="cpu")
    assert fragment in str(info.value)


def test_count_tokens_in_pieces_equals_the_whole_text(tiny_checkpoint):
    from router.scoring.frontend import COUNT_CHUNK_CHARS

    model = load_p2l(tiny_checkpoint, device="cpu")
    backend = model.tokenizer.backend_tokenizer
    text = ("Routers route, rarely   idle; ünïcode too. " * 5000)[: 3 * COUNT_CHUNK_CHARS + 17]
    whole = len(backend.encode(text, add_special_tokens=False))
    assert model.count_tokens(text) == whole


def test_count_tokens_is_not_cut_by_a_long_scorer_input(tiny_checkpoint):
    """Scoring an input over ``max_length`` truncates it (left), which sets truncation on
    the tokenizer; the counts taken after it (the next request's reservation) are whole."""
    model = load_p2l(tiny_checkpoint, device="cpu")
    text = "The ledger keeps every dollar once. " * 4000
    before = model.count_tokens(text)
    assert before > 2 * model.max_length
    ids, full = model.encode([model.render([{"role": "user", "content": text}])])
    assert len(ids[0]) == model.max_length < full[0]
    assert model.count_tokens(text) == before
