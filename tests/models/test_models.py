"""Tiny builds, output shapes and reference figures of the three students."""

from __future__ import annotations

import pytest
import torch

from mobdistill.models import deeplabv3_mnv2, jitnet, mobilevos, registry
from mobdistill.models.blocks import Normalize
from mobdistill.models.complexity import check_reference, count_params, signature_flops


@pytest.mark.parametrize("name", ["jitnet", "deeplab"])
def test_stateless_tiny_output_shape(name: str) -> None:
    entry = registry.get(name)
    config = entry.tiny_config()
    height, width = entry.tiny_resolution
    (sig,) = entry.signatures(config, height, width)
    frame = registry.sample_inputs(sig)["frame"]
    with torch.no_grad():
        logits = entry.build(config)(frame)
    assert logits.shape == registry.torch_shape(sig.outputs[0])
    assert logits.shape == (1, config.num_classes, height, width)


def test_jitnet_odd_resolution_keeps_full_size_logits() -> None:
    config = jitnet.tiny_config()
    with torch.no_grad():
        logits = jitnet.build(config)(torch.rand(1, 3, 70, 100) * 255)
    assert logits.shape == (1, config.num_classes, 70, 100)


def test_mobilevos_tiny_methods_match_signatures() -> None:
    entry = registry.get("mobilevos")
    config = entry.tiny_config()
    model = entry.build(config)
    for sig in entry.signatures(config, *entry.tiny_resolution):
        with torch.no_grad():
            out = getattr(model, sig.method)(**registry.sample_inputs(sig))
        assert list(out) == [spec.name for spec in sig.outputs]
        for spec in sig.outputs:
            assert out[spec.name].shape == registry.torch_shape(spec), spec.name


def test_mobilevos_two_objects_and_no_aspp() -> None:
    config = mobilevos.Config(num_objects=2, aspp=False, key_dim=8, value_dim=8, thin_dim=8,
                              decoder_dims=(16, 8, 8))
    model = mobilevos.build(config)
    frames = [torch.rand(1, 3, 32, 48) * 255 for _ in range(3)]
    mask = torch.zeros(1, 2, 32, 48)
    mask[:, 0, :16], mask[:, 1, 16:] = 1, 1
    outs = mobilevos.run_sequence(model, frames, mask, queue_length=2)
    assert len(outs) == 2 and outs[0].shape == (1, 3, 32, 48)
    probs = torch.softmax(outs[-1], 1)
    assert torch.allclose(probs.sum(1), torch.ones(1, 32, 48), atol=1e-5)


def test_mobilevos_batchnorm_stays_frozen() -> None:
    model = mobilevos.build(mobilevos.tiny_config()).train()
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert bns and not any(bn.training for bn in bns)


@pytest.mark.parametrize("h, w", [(4, 6), (3, 5)])  # even hw: the batched form; odd: one product
def test_mobilevos_memory_read_is_the_plain_softmax_readout(h: int, w: int) -> None:
    torch.manual_seed(0)
    qk, mk, mv = torch.randn(1, h, w, 8), torch.randn(2, h, w, 8), torch.randn(2, 1, h, w, 4)
    q, m = qk.reshape(-1, 8), mk.reshape(-1, 8)
    affinity = torch.softmax((2 * q @ m.T - (m * m).sum(1)) / 8 ** 0.5, dim=1)
    want = (affinity @ mv[:, 0].reshape(-1, 4)).reshape(1, h, w, 4).permute(0, 3, 1, 2)
    for batched in (False, True):
        torch.testing.assert_close(mobilevos.read_memory(qk, mk, mv, batched), want)


def test_normalize_maps_raw_rgb() -> None:
    norm = Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
    x = torch.tensor([0.0, 127.5, 255.0]).view(1, 3, 1, 1)
    assert torch.allclose(norm(x).flatten(), torch.tensor([-1.0, 0.0, 1.0]))


@pytest.mark.parametrize(
    ("name", "index"), [("jitnet", 0), ("jitnet", 1), ("jitnet", 2), ("deeplab", 0),
                        ("mobilevos", 0), ("mobilevos", 1)],
)
def test_reference_figures(name: str, index: int) -> None:
    entry = registry.get(name)
    check = check_reference(entry, entry.references[index])
    assert check.passed, check


def test_deeplab_exact_params_and_gflops_at_256x512() -> None:
    entry = registry.get("deeplab")
    model = deeplabv3_mnv2.build(deeplabv3_mnv2.paper_config())
    assert count_params(model).trainable == 2_113_043
    flops = signature_flops(entry, deeplabv3_mnv2.paper_config(), 256, 512)["serving_default"]
    assert flops == pytest.approx(2.60e9, rel=0.01)  # specs.md §7


def test_mobilevos_step_flops_grow_with_queue_length() -> None:
    entry = registry.get("mobilevos")
    short = signature_flops(entry, mobilevos.Config(queue_length=1), 480, 864)
    long = signature_flops(entry, mobilevos.Config(queue_length=4), 480, 864)
    assert short["init"] == long["init"] and long["step"] > short["step"]
