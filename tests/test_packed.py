"""Packed oneDNN linear layers for CPU inference (textgym.models.packed)."""

from __future__ import annotations

import copy
import pickle

import pytest
import torch
import torch.nn.functional as F

from textgym.models import load_model
from textgym.models.packed import PackedLinears, available

pytestmark = pytest.mark.skipif(not available(), reason="this PyTorch has no oneDNN linear ops")


def attached(*layers: torch.nn.Module) -> PackedLinears:
    packed = PackedLinears()
    for layer in layers:
        packed.attach(layer)
    return packed


def test_packed_products_equal_plain_ones():
    torch.manual_seed(0)
    with_bias, without_bias = torch.nn.Linear(64, 96), torch.nn.Linear(64, 96, bias=False)
    packed = attached(with_bias, without_bias)
    for x in (torch.randn(8, 64), torch.randn(3, 5, 64), torch.randn(1, 64)):
        with torch.no_grad():
            expected = with_bias(x), without_bias(x)
            with packed:
                got = with_bias(x), without_bias(x)
        for a, b in zip(got, expected):
            assert a.shape == b.shape
            torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
    # One copy per weight, reused by every call; products outside the block were not packed.
    assert packed.packed_bytes == 2 * 96 * 64 * 4


def test_only_attached_layers_inside_the_block_without_grad_are_packed():
    torch.manual_seed(0)
    layer, other = torch.nn.Linear(32, 16), torch.nn.Linear(32, 16)
    x = torch.randn(4, 32)
    packed = attached(layer)
    with packed:
        out = layer(x)  # autograd on: the plain product, with its graph
        with torch.no_grad():
            other(x)  # not attached
            F.linear(x, other.weight)  # not a layer call
            half = layer.to(torch.bfloat16)(x.to(torch.bfloat16))  # not float32
    assert out.requires_grad and half.dtype == torch.bfloat16
    assert packed.packed_bytes == 0
    layer.float()
    with torch.no_grad():
        layer(x)  # outside the block
    assert packed.packed_bytes == 0
    off = PackedLinears(enabled=False)
    off.attach(layer)
    with torch.no_grad(), off:
        layer(x)
    assert off.packed_bytes == 0
    assert all(getattr(hook, "__self__", None) is not off for hook in layer._forward_hooks.values())


def test_a_changed_weight_is_packed_again():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 16)
    x = torch.randn(4, 32)
    packed = attached(layer)
    with torch.no_grad(), packed:
        before = layer(x)
        layer.weight.mul_(2.0)  # in place, as an optimiser step
        after = layer(x)
        layer.load_state_dict({"weight": torch.zeros(16, 32), "bias": layer.bias.clone()})
        zeroed = layer(x)
    torch.testing.assert_close(after - layer.bias, 2 * (before - layer.bias), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(zeroed, layer.bias.expand(4, 16))


def test_an_exception_inside_a_layer_leaves_nothing_switched_on():
    layer = torch.nn.Linear(32, 16)
    packed = attached(layer)
    with torch.no_grad(), packed, pytest.raises(RuntimeError):
        layer(torch.randn(4, 31))  # wrong width
    assert packed._pushed == []
    torch.ones(2) + 1  # the mode is off again: plain ops run
    with torch.no_grad():
        assert torch.equal(layer(torch.zeros(1, 32)), layer.bias[None])


def test_a_whole_model_matches_and_clear_frees_the_copies():
    model = load_model("tiny")
    ids = torch.randint(0, 1000, (2, 7))
    packed = attached(model)
    with torch.no_grad():
        expected = model(input_ids=ids).logits
        with packed:
            got = model(input_ids=ids).logits
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)
    weights = {id(m.weight): m.weight for m in model.modules() if isinstance(m, torch.nn.Linear)}
    assert packed.packed_bytes == sum(w.numel() * 4 for w in weights.values())
    packed.clear()
    assert packed.packed_bytes == 0
    packed.pack(model)
    assert packed.packed_bytes == sum(w.numel() * 4 for w in weights.values())


def test_copies_and_pickles_carry_the_hooks_but_not_the_packed_weights():
    torch.manual_seed(0)
    layer = torch.nn.Linear(32, 16)
    packed = attached(layer)
    x = torch.randn(4, 32)
    with torch.no_grad(), packed:
        expected = layer(x)
    for clone in (copy.deepcopy(layer), pickle.loads(pickle.dumps(layer))):
        [hook] = clone._forward_hooks.values()
        clone_packed = hook.__self__
        assert clone_packed is not packed and clone_packed.packed_bytes == 0
        with torch.no_grad(), clone_packed:
            torch.testing.assert_close(clone(x), expected)
        assert clone_packed.packed_bytes == 16 * 32 * 4  # the copy packs its own weight


def test_under_bf16_autocast_products_run_on_kept_bf16_copies_equal_to_autocasts():
    torch.manual_seed(0)
    layer, frozen = torch.nn.Linear(64, 96), torch.nn.Linear(64, 32, bias=False).requires_grad_(False)
    packed = attached(layer, frozen)
    x = torch.randn(5, 64)

    def run(inside: bool) -> tuple[torch.Tensor, torch.Tensor]:
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            if not inside:
                return layer(x), frozen(layer(x)[:, :64])
            with packed:
                return layer(x), frozen(layer(x)[:, :64])

    got, expected = run(True), run(False)
    for a, b in zip(got, expected):
        assert a.dtype == torch.bfloat16 and torch.equal(a, b)  # autocast's cast, made once
    assert packed.packed_bytes == (96 * 64 + 96 + 32 * 64) * 2
    copy = packed.bf16(frozen.weight)
    run(True)
    assert packed.bf16(frozen.weight) is copy  # kept between blocks while the weight is unchanged
    with torch.no_grad():
        layer.weight.mul_(2.0)  # as an optimiser step: copied again
    got, expected = run(True), run(False)
    assert all(torch.equal(a, b) for a, b in zip(got, expected))
    other = torch.nn.Linear(64, 96)
    fresh = attached(other)
    with fresh, torch.autocast("cpu", dtype=torch.bfloat16):
        out = other(x)  # autograd on: autocast's own cast, with its graph
    assert out.requires_grad and fresh.packed_bytes == 0
