"""Backbones: Dream-format checkpoints, bidirectionality, padding, resize_vocab, saving."""

from __future__ import annotations

import copy
import json
import warnings
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from omni_blocks import VocabLayout
from omni_blocks.backbones import (
    Backbone,
    HFBackbone,
    NativeTransformer,
    PretrainedTransformer,
    TransformerConfig,
    grow_rows,
)
from omni_blocks.checkpointing import SAFE_INDEX, parse_size

VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS = 96, 32, 48, 2, 4, 2
HEAD_DIM = HIDDEN // HEADS


def dream_config(**changes: object) -> dict[str, object]:
    """A config.json as Dream-7B's (same keys), with tiny sizes."""
    config: dict[str, object] = {
        "architectures": ["DreamModel"],
        "auto_map": {
            "AutoConfig": "configuration_dream.DreamConfig",
            "AutoModel": "modeling_dream.DreamModel",
        },
        "attention_dropout": 0.0,
        "bos_token_id": 94,
        "eos_token_id": 93,
        "hidden_act": "silu",
        "hidden_size": HIDDEN,
        "initializer_range": 0.02,
        "intermediate_size": INTER,
        "mask_token_id": 95,
        "max_position_embeddings": 256,
        "max_window_layers": LAYERS,
        "model_type": "Dream",
        "num_attention_heads": HEADS,
        "num_hidden_layers": LAYERS,
        "num_key_value_heads": KV_HEADS,
        "pad_token_id": 93,
        "rms_norm_eps": 1e-06,
        "rope_scaling": None,
        "rope_theta": 1000000.0,
        "sliding_window": None,
        "tie_word_embeddings": False,
        "torch_dtype": "float32",
        "use_cache": True,
        "use_sliding_window": False,
        "vocab_size": VOCAB,
    }
    config.update(changes)
    return config


def dream_state(seed: int = 0, tied: bool = False) -> dict[str, torch.Tensor]:
    """Random weights under the real Dream / Qwen2 parameter names and shapes."""
    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.2) -> torch.Tensor:
        return torch.randn(*shape, generator=g) * scale

    state = {
        "model.embed_tokens.weight": rand(VOCAB, HIDDEN, scale=1.0),
        "model.norm.weight": 1 + rand(HIDDEN, scale=0.1),
    }
    if not tied:
        state["lm_head.weight"] = rand(VOCAB, HIDDEN)
    for n in range(LAYERS):
        p = f"model.layers.{n}."
        state[p + "self_attn.q_proj.weight"] = rand(HEADS * HEAD_DIM, HIDDEN)
        state[p + "self_attn.q_proj.bias"] = rand(HEADS * HEAD_DIM, scale=0.1)
        for k in "kv":
            state[p + f"self_attn.{k}_proj.weight"] = rand(KV_HEADS * HEAD_DIM, HIDDEN)
            state[p + f"self_attn.{k}_proj.bias"] = rand(KV_HEADS * HEAD_DIM, scale=0.1)
        state[p + "self_attn.o_proj.weight"] = rand(HIDDEN, HEADS * HEAD_DIM)
        state[p + "mlp.gate_proj.weight"] = rand(INTER, HIDDEN)
        state[p + "mlp.up_proj.weight"] = rand(INTER, HIDDEN)
        state[p + "mlp.down_proj.weight"] = rand(HIDDEN, INTER)
        state[p + "input_layernorm.weight"] = 1 + rand(HIDDEN, scale=0.1)
        state[p + "post_attention_layernorm.weight"] = 1 + rand(HIDDEN, scale=0.1)
    return state


def write_checkpoint(
    folder: Path, config: dict[str, object], state: dict[str, torch.Tensor]
) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(json.dumps(config))
    save_file(state, str(folder / "model.safetensors"), metadata={"format": "pt"})
    return folder


@pytest.fixture(scope="module")
def dream_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_checkpoint(tmp_path_factory.mktemp("dream"), dream_config(), dream_state())


@pytest.fixture(scope="module")
def native(dream_dir: Path) -> NativeTransformer:
    return NativeTransformer.from_pretrained(dream_dir).eval()


@pytest.fixture(scope="module")
def hf(dream_dir: Path) -> HFBackbone:
    return HFBackbone(str(dream_dir)).eval()


def ids(batch: int = 2, seq: int = 7, seed: int = 1) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, seq), generator=torch.Generator().manual_seed(seed))


# ---------------------------------------------------------------------- loading
def test_native_loads_the_real_parameter_names(native: NativeTransformer) -> None:
    state = dream_state()
    loaded = dict(native.named_parameters())
    assert set(loaded) == set(state)
    for name, tensor in state.items():
        assert torch.equal(loaded[name], tensor), name
    assert native.config.model_type == "Dream"
    assert native.config.extra["mask_token_id"] == 95
    assert isinstance(native, Backbone)


def test_native_and_hf_give_the_same_logits(native: NativeTransformer, hf: HFBackbone) -> None:
    x = ids()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[1, 5:] = False
    with torch.no_grad():
        a, b = native(x), hf(x)
        am, bm = native(x, mask), hf(x, mask)
    assert a.shape == (2, 7, VOCAB)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(am[mask], bm[mask], atol=1e-5, rtol=1e-5)
    assert native.vocab_size == hf.vocab_size == VOCAB


def test_dream_checkpoints_shift_logits_by_default(
    dream_dir: Path, native: NativeTransformer, hf: HFBackbone
) -> None:
    assert native.shift_logits and hf.shift_logits
    plain = NativeTransformer.from_pretrained(dream_dir, shift_logits=False).eval()
    assert not plain.shift_logits
    x = ids()
    with torch.no_grad():
        shifted, unshifted = native(x), plain(x)
    # Dream's sampler: logits = cat([logits[:, :1], logits[:, :-1]], dim=1)
    assert torch.equal(shifted[:, 0], unshifted[:, 0])
    assert torch.equal(shifted[:, 1:], unshifted[:, :-1])
    fresh = NativeTransformer(VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS)
    assert not fresh.shift_logits


def test_qwen2_checkpoints_do_not_shift(tmp_path: Path) -> None:
    config = dream_config(model_type="qwen2", architectures=["Qwen2ForCausalLM"])
    folder = write_checkpoint(tmp_path, config, dream_state())
    assert not NativeTransformer.from_pretrained(folder).shift_logits
    assert not PretrainedTransformer(str(folder)).shift_logits


# ---------------------------------------------------------------------- attention
@pytest.mark.parametrize("which", ["native", "hf"])
def test_attention_is_bidirectional(which: str, request: pytest.FixtureRequest) -> None:
    net = request.getfixturevalue(which)
    net.shift_logits = False
    try:
        x = ids(batch=1, seq=6)
        y = x.clone()
        y[0, -1] = (x[0, -1] + 1) % VOCAB
        with torch.no_grad():
            first_x, first_y = net(x)[0, 0], net(y)[0, 0]
        assert (first_x - first_y).abs().max() > 1e-4
    finally:
        net.shift_logits = True


def test_the_bidirectionality_check_detects_a_causal_model(hf: HFBackbone) -> None:
    from transformers import Qwen2ForCausalLM

    config = copy.deepcopy(hf.model.config)
    config.is_causal = True
    causal = Qwen2ForCausalLM(config)
    causal.load_state_dict(hf.model.state_dict())
    causal.eval()
    x = ids(batch=1, seq=6)
    y = x.clone()
    y[0, -1] = (x[0, -1] + 1) % VOCAB
    with torch.no_grad():
        assert torch.equal(causal(x).logits[0, 0], causal(y).logits[0, 0])
    assert hf.is_bidirectional()


def causal_net(dream_dir: Path) -> NativeTransformer:
    net = NativeTransformer.from_pretrained(dream_dir, shift_logits=False).eval()
    net.causal = True
    return net


@pytest.mark.parametrize("padded", [False, True])
def test_causal_attention_ignores_later_tokens(dream_dir: Path, padded: bool) -> None:
    net = causal_net(dream_dir)
    x = ids(batch=1, seq=6)
    y = x.clone()
    y[0, 4] = (x[0, 4] + 1) % VOCAB
    mask = torch.ones_like(x, dtype=torch.bool) if padded else None
    with torch.no_grad():
        lx, ly = net(x, mask), net(y, mask)
    torch.testing.assert_close(lx[0, :4], ly[0, :4], atol=1e-6, rtol=1e-6)
    assert (lx[0, 4:] - ly[0, 4:]).abs().max() > 1e-4  # the changed token and after do change


def test_causal_attention_with_padding_matches_no_padding(dream_dir: Path) -> None:
    net = causal_net(dream_dir)
    real = ids(batch=1, seq=5, seed=3)
    padded = torch.cat([torch.full((1, 2), 7), real, torch.full((1, 2), 9)], 1)
    mask = torch.zeros_like(padded, dtype=torch.bool)
    mask[0, 2:7] = True
    with torch.no_grad():
        alone = net(real)[0]
        out = net(padded, mask)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[0, 2:7], alone, atol=1e-5, rtol=1e-5)


def test_causal_flag_round_trips_through_save(dream_dir: Path, tmp_path: Path) -> None:
    net = causal_net(dream_dir)
    folder = net.save_pretrained(tmp_path / "ar")
    assert json.loads((folder / "config.json").read_text())["is_causal"] is True
    again = NativeTransformer.from_pretrained(folder)
    assert again.causal
    x = ids(batch=1, seq=6)
    with torch.no_grad():
        torch.testing.assert_close(again(x), net(x))


@pytest.mark.parametrize("which", ["native", "hf"])
@pytest.mark.parametrize("side", ["right", "left"])
def test_padding_is_ignored(which: str, side: str, request: pytest.FixtureRequest) -> None:
    net = request.getfixturevalue(which)
    real = ids(batch=1, seq=5, seed=3)
    pad = torch.full((1, 3), 7)
    padded = torch.cat([real, pad], 1) if side == "right" else torch.cat([pad, real], 1)
    mask = padded != -1
    if side == "right":
        mask[0, 5:] = False
    else:
        mask[0, :3] = False
    other = padded.clone()
    other[~mask] = 11  # different padding content
    net.shift_logits = False
    try:
        with torch.no_grad():
            alone = net(real)[0]
            with_pad = net(padded, mask)[0][mask[0]]
            other_pad = net(other, mask)[0][mask[0]]
    finally:
        net.shift_logits = True
    torch.testing.assert_close(with_pad, alone, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(other_pad, alone, atol=1e-5, rtol=1e-5)


def test_a_row_of_padding_only_stays_finite(native: NativeTransformer) -> None:
    x = ids(batch=2, seq=4)
    mask = torch.zeros_like(x, dtype=torch.bool)
    mask[0] = True
    with torch.no_grad():
        assert torch.isfinite(native(x, mask)).all()


def test_out_of_range_ids_are_rejected(native: NativeTransformer) -> None:
    with pytest.raises(ValueError, match=r"\[0, 96\)"):
        native(torch.tensor([[0, VOCAB]]))


# ---------------------------------------------------------------------- resize_vocab
@pytest.mark.parametrize("tied", [False, True])
def test_native_resize_to_the_paper_layout_keeps_old_rows(tied: bool) -> None:
    new_size = VocabLayout.omni_diffusion().vocab_size  # 176,247
    old_size = 152_064  # Dream-7B's vocab_size
    torch.manual_seed(0)
    net = NativeTransformer(old_size, 8, 16, 1, 2, 1, tie_word_embeddings=tied).eval()
    embed = net.model.embed_tokens.weight.detach().clone()
    head = net.lm_head.weight.detach().clone()
    x = torch.tensor([[0, 5, old_size - 1, 151_666]])
    with torch.no_grad():
        before = net(x)
    net.resize_vocab(new_size)
    assert net.vocab_size == new_size == net.config.vocab_size
    new_embed, new_head = net.model.embed_tokens.weight, net.lm_head.weight
    assert new_embed.shape == new_head.shape == (new_size, 8)
    assert torch.equal(new_embed[:old_size], embed)
    assert torch.equal(new_head[:old_size], head)
    torch.testing.assert_close(new_embed[old_size:], embed.mean(0).expand(new_size - old_size, -1))
    assert (new_head is new_embed) == tied
    with torch.no_grad():
        after = net(x)
    torch.testing.assert_close(after[..., :old_size], before, atol=1e-6, rtol=1e-6)
    net(torch.tensor([[new_size - 1]]))  # the new ids are usable


def test_hf_resize_keeps_old_rows(dream_dir: Path) -> None:
    net = HFBackbone(str(dream_dir)).eval()
    embed = net.model.get_input_embeddings().weight.detach().clone()
    head = net.model.get_output_embeddings().weight.detach().clone()
    x = ids()
    with torch.no_grad():
        before = net(x)
    net.resize_vocab(VOCAB + 10)
    assert net.vocab_size == VOCAB + 10 == net.model.config.vocab_size
    assert torch.equal(net.model.get_input_embeddings().weight[:VOCAB], embed)
    assert torch.equal(net.model.get_output_embeddings().weight[:VOCAB], head)
    torch.testing.assert_close(
        net.model.get_output_embeddings().weight[VOCAB:], head.mean(0).expand(10, -1)
    )
    with torch.no_grad():
        torch.testing.assert_close(net(x)[..., :VOCAB], before, atol=1e-6, rtol=1e-6)


def test_grow_rows_shrinks_and_validates() -> None:
    w = torch.arange(12.0).reshape(4, 3)
    assert torch.equal(grow_rows(w, 2), w[:2])
    with pytest.raises(ValueError, match="positive"):
        grow_rows(w, 0)


# ---------------------------------------------------------------------- saving
def test_sharded_save_round_trips_through_native_and_hf(
    native: NativeTransformer, tmp_path: Path
) -> None:
    folder = native.save_pretrained(tmp_path / "saved", max_shard_size="20KB")
    index = json.loads((folder / SAFE_INDEX).read_text())
    shards = set(index["weight_map"].values())
    assert len(shards) > 1 and all((folder / s).is_file() for s in shards)
    config = json.loads((folder / "config.json").read_text())
    assert config["shift_logits"] is True and config["is_causal"] is False
    assert config["mask_token_id"] == 95  # extra Dream keys are kept
    again = NativeTransformer.from_pretrained(folder).eval()
    hf_again = HFBackbone(str(folder)).eval()
    x = ids()
    with torch.no_grad():
        torch.testing.assert_close(again(x), native(x), atol=0, rtol=0)
        torch.testing.assert_close(hf_again(x), native(x), atol=1e-5, rtol=1e-5)


def test_hf_save_loads_natively(hf: HFBackbone, native: NativeTransformer, tmp_path: Path) -> None:
    folder = hf.save_pretrained(tmp_path / "hf")
    again = NativeTransformer.from_pretrained(folder).eval()
    assert again.shift_logits
    with torch.no_grad():
        torch.testing.assert_close(again(ids()), native(ids()), atol=1e-5, rtol=1e-5)


def test_tied_checkpoint_without_lm_head(tmp_path: Path) -> None:
    folder = write_checkpoint(
        tmp_path / "tied", dream_config(tie_word_embeddings=True), dream_state(tied=True)
    )
    net = NativeTransformer.from_pretrained(folder)
    assert net.lm_head.weight is net.model.embed_tokens.weight
    saved = net.save_pretrained(tmp_path / "out")
    from safetensors import safe_open

    with safe_open(str(saved / "model.safetensors"), "pt") as f:
        assert "lm_head.weight" not in f.keys()  # noqa: SIM118
    hf = HFBackbone(str(folder)).eval()
    with torch.no_grad():
        torch.testing.assert_close(hf(ids()), net.eval()(ids()), atol=1e-5, rtol=1e-5)


def test_parse_size() -> None:
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("2KiB") == 2048
    assert parse_size(10) == 10
    with pytest.raises(ValueError, match="size"):
        parse_size("lots")


# ---------------------------------------------------------------------- safety and errors
def test_pickled_weights_need_allow_pickle(tmp_path: Path) -> None:
    folder = tmp_path / "pickled"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps(dream_config()))
    torch.save(dream_state(), folder / "pytorch_model.bin")
    with pytest.raises(FileNotFoundError, match="allow_pickle"):
        NativeTransformer.from_pretrained(folder)
    net = NativeTransformer.from_pretrained(folder, allow_pickle=True)
    assert torch.equal(net.lm_head.weight, dream_state()["lm_head.weight"])


def test_missing_and_extra_tensors(tmp_path: Path) -> None:
    state = dream_state()
    del state["model.layers.1.mlp.up_proj.weight"]
    folder = write_checkpoint(tmp_path / "missing", dream_config(), state)
    with pytest.raises(ValueError, match=r"model\.layers\.1\.mlp\.up_proj\.weight"):
        NativeTransformer.from_pretrained(folder)
    state = {**dream_state(), "model.audio_model.encoder.weight": torch.zeros(3)}
    folder = write_checkpoint(tmp_path / "extra", dream_config(), state)
    with pytest.warns(UserWarning, match="audio_model"):
        NativeTransformer.from_pretrained(folder)
    with pytest.raises(ValueError, match="audio_model"):
        NativeTransformer.from_pretrained(folder, strict=True)
    wrong = write_checkpoint(tmp_path / "wrong", dream_config(hidden_size=16), dream_state())
    with pytest.raises(ValueError, match="shape mismatch"):
        NativeTransformer.from_pretrained(wrong)


def test_hub_ids_download_safetensors_only(
    dream_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import huggingface_hub

    calls: list[dict[str, object]] = []

    def fake_snapshot_download(repo_id: str, **kwargs: object) -> str:
        calls.append({"repo_id": repo_id, **kwargs})
        return str(dream_dir)

    monkeypatch.setattr(huggingface_hub, "snapshot_download", fake_snapshot_download)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        net = PretrainedTransformer("Dream-org/Dream-v0-Base-7B", revision="main", vocab_size=100)
    assert net.vocab_size == 100 and net.shift_logits
    assert calls[0]["repo_id"] == "Dream-org/Dream-v0-Base-7B"
    assert calls[0]["revision"] == "main"
    patterns = calls[0]["allow_patterns"]
    assert isinstance(patterns, list) and "*.safetensors" in patterns and "*.bin" not in patterns


def test_bad_names_and_configs(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="neither"):
        NativeTransformer.from_pretrained(tmp_path / "nowhere" / "deeper")
    with pytest.raises(ValueError, match="divisible"):
        TransformerConfig(10, 30, 8, 1, 4)
    with pytest.raises(ValueError, match="multiple"):
        TransformerConfig(10, 32, 8, 1, 4, 3)
    with pytest.raises(ValueError, match="RoPE scaling"):
        TransformerConfig.from_dict(dream_config(rope_scaling={"type": "yarn", "factor": 4.0}))
    with pytest.raises(ValueError, match="SiLU"):
        TransformerConfig.from_dict(dream_config(hidden_act="gelu"))
    with pytest.raises(ValueError, match="required"):
        TransformerConfig.from_dict({"hidden_size": 8})


def test_config_round_trip_keeps_extra_keys() -> None:
    config = TransformerConfig.from_dict(dream_config())
    assert config.kv_heads == KV_HEADS and config.head_dim == HEAD_DIM
    again = TransformerConfig.from_dict(config.to_dict())
    assert again == config and dict(again.extra) == dict(config.extra)


# ---------------------------------------------------------------------- training
def test_gradient_checkpointing_gives_the_same_gradients() -> None:
    torch.manual_seed(0)
    plain = NativeTransformer(VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS).train()
    ckpt = NativeTransformer(
        VOCAB, HIDDEN, INTER, LAYERS, HEADS, KV_HEADS, gradient_checkpointing=True
    )
    ckpt.load_state_dict(plain.state_dict())
    ckpt.train()
    x = ids()
    mask = torch.ones_like(x, dtype=torch.bool)
    mask[0, -2:] = False
    for net in (plain, ckpt):
        net(x, mask).logsumexp(-1).sum().backward()
    for (name, a), b in zip(plain.named_parameters(), ckpt.parameters(), strict=True):
        assert a.grad is not None and b.grad is not None, name
        torch.testing.assert_close(a.grad, b.grad, atol=1e-6, rtol=1e-5)


def test_bf16_forward_and_backward(native: NativeTransformer) -> None:
    net = NativeTransformer.from_config(native.config, shift_logits=True)
    net.load_state_dict(native.state_dict())
    net = net.to(torch.bfloat16).train()
    x = ids()
    logits = net(x)
    assert logits.dtype == torch.bfloat16
    logits.float().logsumexp(-1).mean().backward()
    assert net.model.layers[0].self_attn.q_proj.weight.grad is not None
    with torch.no_grad():
        reference = native(x)
        net.eval()
        torch.testing.assert_close(net(x).float(), reference, atol=0.15, rtol=0.05)


def test_built_from_a_lightning_cli_config() -> None:
    from jsonargparse import ArgumentParser

    parser = ArgumentParser()
    parser.add_argument("--backbone", type=torch.nn.Module)
    config = parser.parse_args(
        [
            "--backbone",
            json.dumps(
                {
                    "class_path": "omni_blocks.backbones.NativeTransformer",
                    "init_args": {
                        "vocab_size": 50,
                        "hidden_size": 16,
                        "intermediate_size": 32,
                        "num_hidden_layers": 1,
                        "num_attention_heads": 2,
                        "rope_theta": 1e6,
                    },
                }
            ),
        ]
    )
    instantiate = getattr(parser, "instantiate", None) or parser.instantiate_classes
    net = instantiate(config).backbone
    assert isinstance(net, NativeTransformer) and net.config.rope_theta == 1e6
    assert net(torch.zeros(1, 3, dtype=torch.long)).shape == (1, 3, 50)
