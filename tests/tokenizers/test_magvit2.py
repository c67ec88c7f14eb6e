"""MAGVIT-v2: upstream key layout, LFQ convention, checkpoint loading and input checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from omni_blocks.tokenizers import ImageTokenizer, MagvitV2
from omni_blocks.tokenizers.magvit2 import LookupFreeQuantizer
from omni_blocks.vocab import Modality, VocabLayout

# A narrow instance with the real level structure (5 levels: 16x downsampling), so a 256x256
# image still maps to 16x16 codes in [0, 8192) but runs in well under a second on CPU.
TINY = {"ch": 32, "encoder_num_res_blocks": (1, 1, 1, 1, 1), "decoder_num_res_blocks": (1,) * 5}


def upstream_shapes(
    ch: int = 128,
    enc_mult: tuple[int, ...] = (1, 2, 2, 4, 4),
    enc_blocks: tuple[int, ...] = (4, 3, 4, 3, 4),
    dec_mult: tuple[int, ...] = (1, 1, 2, 2, 4),
    dec_blocks: tuple[int, ...] = (4, 4, 3, 4, 3),
    z: int = 13,
) -> dict[str, tuple[int, ...]]:
    """Key -> shape of upstream MAGVITv2's state dict, following the construction rules of
    VQGANEncoder / VQGANDecoder / LFQuantizer (omni_diffusion/models/magvit/modeling_magvitv2.py)
    and ResnetBlock / AttnBlock / Downsample / Upsample (common_modules.py)."""
    shapes: dict[str, tuple[int, ...]] = {}

    def conv(name: str, cin: int, cout: int, k: int) -> None:
        shapes[f"{name}.weight"] = (cout, cin, k, k)
        shapes[f"{name}.bias"] = (cout,)

    def norm(name: str, c: int) -> None:
        shapes[f"{name}.weight"] = (c,)
        shapes[f"{name}.bias"] = (c,)

    def res(name: str, cin: int, cout: int) -> None:
        norm(f"{name}.norm1", cin)
        conv(f"{name}.conv1", cin, cout, 3)
        norm(f"{name}.norm2", cout)
        conv(f"{name}.conv2", cout, cout, 3)
        if cin != cout:
            conv(f"{name}.nin_shortcut", cin, cout, 1)

    def mid(prefix: str, c: int) -> None:
        res(f"{prefix}.mid.block_1", c, c)
        norm(f"{prefix}.mid.attn_1.norm", c)
        for p in ("q", "k", "v", "proj_out"):
            conv(f"{prefix}.mid.attn_1.{p}", c, c, 1)
        res(f"{prefix}.mid.block_2", c, c)

    conv("encoder.conv_in", 3, ch, 3)
    in_mult = (1, *enc_mult)
    for i, n in enumerate(enc_blocks):
        block_in = ch * in_mult[i]
        for j in range(n):
            res(f"encoder.down.{i}.block.{j}", block_in, ch * enc_mult[i])
            block_in = ch * enc_mult[i]
        if i != len(enc_mult) - 1:
            conv(f"encoder.down.{i}.downsample.conv", block_in, block_in, 3)
    mid("encoder", block_in)
    norm("encoder.norm_out", block_in)
    conv("encoder.conv_out", block_in, z, 3)
    conv("encoder.quant_conv", z, z, 1)

    block_in = ch * dec_mult[-1]
    conv("decoder.conv_in", z, block_in, 3)
    mid("decoder", block_in)
    for i in reversed(range(len(dec_mult))):
        for j in range(dec_blocks[i]):
            res(f"decoder.up.{i}.block.{j}", block_in, ch * dec_mult[i])
            block_in = ch * dec_mult[i]
        if i != 0:
            conv(f"decoder.up.{i}.upsample.conv", block_in, block_in, 3)
    norm("decoder.norm_out", block_in)
    conv("decoder.conv_out", block_in, 3, 3)
    conv("decoder.post_quant_conv", z, z, 1)
    shapes["quantize.embedding"] = (2**z, z)
    shapes["quantize.power_vals"] = (z,)
    return shapes


def model_shapes(model: torch.nn.Module) -> dict[str, tuple[int, ...]]:
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


@pytest.fixture(scope="module")
def tiny() -> MagvitV2:
    torch.manual_seed(0)
    return MagvitV2(**TINY).eval()


def write_upstream_checkpoint(model: MagvitV2, folder: Path) -> Path:
    """What upstream `save_pretrained` writes: diffusers' config.json without architecture
    fields, and the weights as pytorch_model.safetensors."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "config.json").write_text(
        json.dumps({"_class_name": "MAGVITv2", "_diffusers_version": "0.30.1"})
    )
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, str(folder / "pytorch_model.safetensors"), metadata={"format": "pt"})
    return folder


def test_default_architecture_matches_the_open_checkpoint() -> None:
    with torch.device("meta"):
        model = MagvitV2()
    assert model_shapes(model) == upstream_shapes()
    # huggingface.co/showlab/magvitv2 lists pytorch_model.safetensors at 382 MB (float32).
    size = sum(v.numel() * v.element_size() for v in model.state_dict().values())
    assert 381.5e6 < size < 382.5e6
    assert model.codebook_size == 8192
    assert (model.downsample_factor, model.grid_size, model.tokens_per_item) == (16, 16, 256)
    with torch.device("meta"):
        assert MagvitV2(image_size=512).tokens_per_item == 1024


def test_tiny_instance_has_the_upstream_layout(tiny: MagvitV2) -> None:
    expected = upstream_shapes(ch=32, enc_blocks=(1,) * 5, dec_blocks=(1,) * 5)
    assert model_shapes(tiny) == expected


def test_lfq_code_bit_convention() -> None:
    lfq = LookupFreeQuantizer(13)
    assert lfq.codebook_size == 8192
    z = -torch.ones(1, 13, 1, 13)
    for i in range(13):  # channel i alone positive -> bit 12 - i (most significant first)
        z[0, i, 0, i] = 0.5
    assert lfq.codes(z).flatten().tolist() == [2 ** (12 - i) for i in range(13)]
    assert int(lfq.codes(torch.zeros(1, 13, 1, 1))) == 0  # z == 0 is not > 0: bit 0
    codes = torch.arange(8192).view(1, 64, 128)
    latents = lfq.latents(codes)
    assert set(latents.unique().tolist()) == {-1.0, 1.0}
    assert torch.equal(lfq.codes(latents), codes)
    assert torch.equal(lfq.embedding, lfq.latents(torch.arange(8192).view(1, 1, -1))[0, :, 0].T)
    assert lfq.power_vals.tolist() == [2**i for i in range(12, -1, -1)]
    z = torch.randn(2, 13, 3, 3, requires_grad=True)
    quantized, _ = lfq(z)
    quantized.sum().backward()  # straight-through: identity gradient
    assert torch.equal(z.grad, torch.ones_like(z))


def test_upstream_checkpoint_loads_and_maps_256px_to_16x16_codes(
    tiny: MagvitV2, tmp_path: Path
) -> None:
    folder = write_upstream_checkpoint(tiny, tmp_path / "magvitv2")
    loaded = MagvitV2.from_pretrained(folder, **TINY)
    for key, value in tiny.state_dict().items():
        assert torch.equal(loaded.state_dict()[key], value), key
    assert isinstance(loaded, ImageTokenizer)
    assert loaded.modality is Modality.IMAGE

    images = torch.rand(2, 3, 256, 256, generator=torch.Generator().manual_seed(1))
    codes = loaded.encode(images)
    assert codes.shape == (2, 256) and codes.dtype == torch.long
    assert int(codes.min()) >= 0 and int(codes.max()) < 8192
    assert torch.equal(codes, loaded.encode(images))  # deterministic
    # the codes are the encoder's signs read most significant bit first, row-major
    with torch.no_grad():
        latents = loaded.encoder(images * 2 - 1)
    assert latents.shape == (2, 13, 16, 16)
    bits = (latents > 0).long().permute(0, 2, 3, 1).reshape(2, 256, 13)
    assert torch.equal(codes, (bits * 2 ** torch.arange(12, -1, -1)).sum(-1))

    decoded = loaded.decode(codes)
    assert decoded.shape == (2, 3, 256, 256) and decoded.dtype == torch.float32
    assert float(decoded.min()) >= 0.0 and float(decoded.max()) <= 1.0
    with torch.no_grad():
        raw = loaded.decoder(((bits * 2 - 1).float()).reshape(2, 16, 16, 13).permute(0, 3, 1, 2))
    torch.testing.assert_close(decoded, ((raw + 1) / 2).clamp(0, 1), atol=1e-4, rtol=0)
    assert loaded.encode((images * 255).round().to(torch.uint8)).shape == codes.shape
    global_ids = VocabLayout.omni_diffusion().to_global(codes, Modality.IMAGE)
    assert global_ids.shape == codes.shape


def test_checkpoint_without_derived_buffers_loads(tiny: MagvitV2, tmp_path: Path) -> None:
    state = {k: v for k, v in tiny.state_dict().items() if not k.startswith("quantize.")}
    save_file(state, str(tmp_path / "model.safetensors"))
    loaded = MagvitV2.from_pretrained(tmp_path / "model.safetensors", **TINY)
    assert torch.equal(loaded.quantize.embedding, tiny.quantize.embedding)


def test_save_pretrained_round_trip_keeps_config(tiny: MagvitV2, tmp_path: Path) -> None:
    folder = tiny.save_pretrained(tmp_path / "saved")
    assert (folder / "pytorch_model.safetensors").is_file()
    loaded = MagvitV2.from_pretrained(folder)  # architecture read from config.json
    assert loaded.config == tiny.config
    image = torch.rand(1, 3, 256, 256, generator=torch.Generator().manual_seed(2))
    assert torch.equal(loaded.encode(image), tiny.encode(image))


def test_pickled_weights_need_allow_pickle(tiny: MagvitV2, tmp_path: Path) -> None:
    torch.save(tiny.state_dict(), tmp_path / "pytorch_model.bin")
    with pytest.raises(ValueError, match="allow_pickle=True"):
        MagvitV2.from_pretrained(tmp_path, **TINY)
    loaded = MagvitV2.from_pretrained(tmp_path, allow_pickle=True, **TINY)
    assert torch.equal(loaded.encoder.conv_in.weight, tiny.encoder.conv_in.weight)


def test_loading_errors_name_the_problem(tiny: MagvitV2, tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"pytorch_model\.safetensors"):
        MagvitV2.from_pretrained(tmp_path)
    folder = write_upstream_checkpoint(tiny, tmp_path / "ckpt")
    with pytest.raises(ValueError, match="shape mismatch"):
        MagvitV2.from_pretrained(folder)  # default (full-size) architecture does not fit
    with pytest.raises(ValueError, match="unknown MagvitV2 config field"):
        MagvitV2.from_pretrained(folder, channels=3, **TINY)
    state = dict(tiny.state_dict())
    state.pop("decoder.conv_out.bias")
    state["quantize.power_vals"] = state["quantize.power_vals"].flip(0)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match=r"missing key\(s\) \['decoder.conv_out.bias'\]"):
        MagvitV2.from_pretrained(tmp_path / "bad.safetensors", **TINY)
    state["decoder.conv_out.bias"] = tiny.state_dict()["decoder.conv_out.bias"]
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "bad.safetensors"))
    with pytest.raises(ValueError, match="LFQ convention"):
        MagvitV2.from_pretrained(tmp_path / "bad.safetensors", **TINY)


def test_hub_download_offline_fails_clearly() -> None:
    # conftest sets HF_HUB_OFFLINE=1 and nothing is cached: no network in tests
    with pytest.raises(FileNotFoundError, match="offline"):
        MagvitV2.from_pretrained("omni-blocks-test/no-such-magvit")


def test_constructor_validates_config() -> None:
    with pytest.raises(ValueError, match="multiple of 32"):
        MagvitV2(ch=24)
    with pytest.raises(ValueError, match="downsampling factor 16"):
        MagvitV2(**TINY, image_size=200)
    with pytest.raises(ValueError, match="same number of levels"):
        MagvitV2(**TINY, decoder_ch_mult=(1, 2, 4, 4))


def test_bad_inputs_are_rejected(tiny: MagvitV2) -> None:
    good = torch.rand(1, 3, 256, 256)
    with pytest.raises(ValueError, match="3 channel"):
        tiny.encode(torch.rand(1, 1, 256, 256))
    with pytest.raises(ValueError, match="256x256"):
        tiny.encode(torch.rand(1, 3, 128, 128))
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        tiny.encode(good * 2 - 1)
    with pytest.raises(ValueError, match=r"0\.\.255"):
        tiny.encode(good * 255)
    with pytest.raises(TypeError, match="dtype"):
        tiny.encode(good.long())
    with pytest.raises((TypeError, ValueError)):  # beartype (tests) or our check
        tiny.encode(good[0])
    with pytest.raises(ValueError, match="outside the codebook"):
        tiny.decode(torch.full((1, 256), 8192))
    with pytest.raises(ValueError, match=r"shape \(batch, 256\)"):
        tiny.decode(torch.zeros(1, 255, dtype=torch.long))
    with pytest.raises(TypeError, match="integer codes"):
        tiny.decode(torch.zeros(1, 256))


def test_codes_and_reconstructions_are_upstreams_on_random_weights() -> None:
    """Golden: Omni-Diffusion's own MAGVIT-v2 (`get_code`, `decode_code`) at width 32 with
    seeded weights (`tests/fixtures/magvit2/`, see its `make_fixture.py`)."""
    import json

    from safetensors.torch import load_file

    fixture = Path(__file__).resolve().parents[1] / "fixtures" / "magvit2"
    golden = json.loads((fixture / "codes.json").read_text())
    stored = load_file(str(fixture / "images.safetensors"))
    model = MagvitV2(
        ch=golden["ch"],
        encoder_num_res_blocks=tuple(golden["num_res_blocks"]),
        decoder_num_res_blocks=tuple(golden["num_res_blocks"]),
    ).eval()
    assert sorted(model.state_dict()) == golden["keys"]  # the same 1:1 key layout
    g = torch.Generator().manual_seed(0)
    state = {}
    for name in golden["keys"]:  # the fixture's draw: sorted keys, one generator
        if name.endswith("quantize.embedding") or name.endswith("power_vals"):
            continue
        value = torch.randn(model.state_dict()[name].shape, generator=g) * 0.1
        state[name] = value + 1.0 if "norm" in name and name.endswith("weight") else value
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert not unexpected and all(k.startswith("quantize.") for k in missing)
    images = torch.rand(4, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    torch.testing.assert_close(images.sum((1, 2, 3)), stored["image_sums"])
    with torch.no_grad():
        codes = model.get_code(images)
        assert codes.tolist() == golden["codes"]
        decoded = model.decode_code(codes[:2])
    torch.testing.assert_close(
        decoded[:, :, ::8, ::8], stored["decoded_every_8th"], rtol=1e-4, atol=1e-4
    )
