"""Registry look-ups, option parsing and the `mobdistill info` command."""

from __future__ import annotations

import json

import pytest

from mobdistill.cli import main
from mobdistill.errors import UsageError
from mobdistill.models import registry


def test_names_and_unknown_model() -> None:
    assert registry.names() == ("deeplab", "deeplab-delta", "jitnet", "mobilevos")
    with pytest.raises(UsageError, match="deeplab, deeplab-delta, jitnet, mobilevos"):
        registry.get("unet")


@pytest.mark.parametrize("text", ["480", "480x", "x864", "0x864", "480x-1", "480*864", "ax b"])
def test_bad_resolution_strings(text: str) -> None:
    with pytest.raises(UsageError, match="HEIGHTxWIDTH"):
        registry.parse_resolution(text)


def test_good_resolution_and_stride_checks() -> None:
    assert registry.parse_resolution(" 480X864 ") == (480, 864)
    entry = registry.get("deeplab")
    registry.check_resolution(entry, 257, 513, require_divisible=False)
    with pytest.raises(UsageError, match="divisible by 16"):
        registry.check_resolution(entry, 257, 513)
    with pytest.raises(UsageError, match="at least"):
        registry.check_resolution(entry, 8, 513, require_divisible=False)


def test_configure_overrides_and_errors() -> None:
    entry = registry.get("mobilevos")
    assert registry.configure(entry, aspp=False, queue_length=5).queue_length == 5
    with pytest.raises(UsageError, match="no option"):
        registry.configure(entry, units=2)
    with pytest.raises(UsageError, match="invalid"):
        registry.configure(entry, queue_length=0)


def test_mobilevos_signatures_and_memory() -> None:
    entry = registry.get("mobilevos")
    config = registry.configure(entry, queue_length=3)
    init, step = entry.signatures(config, 480, 864)
    assert [t.shape for t in init.outputs] == [(1, 30, 54, 64), (1, 1, 30, 54, 64)]
    assert [t.shape for t in step.inputs] == [(1, 480, 864, 3), (3, 30, 54, 64), (3, 1, 30, 54, 64)]
    assert step.outputs[0].shape == (1, 480, 864, 2) and step.outputs[0].layout == "NHWC"
    assert entry.memory(config).queue_length == 3
    assert registry.get("jitnet").memory(registry.get("jitnet").paper_config()) is None


def test_info_json_deeplab_reference(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", "deeplab", "--resolution", "257x513", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["params_total"] == 2_113_043
    assert info["gmacs"]["serving_default"] == pytest.approx(1.40, rel=0.06)
    assert [ref["passed"] for ref in info["references"]] == [True]


def test_info_mobilevos_no_aspp(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", "mobilevos", "--no-aspp", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert set(info["flops"]) == {"init", "step"} and info["config"]["aspp"] is False
    assert [ref["label"] for ref in info["references"]] == ["MobileVOS MNV2 without ASPP (Table 4)"]


def test_info_text_and_usage_errors(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["info", "--model", "jitnet", "--tiny"]) == 0
    assert "params:" in capsys.readouterr().out
    assert main(["info", "--model", "nope"]) == 2
    assert main(["info", "--model", "jitnet", "--no-aspp"]) == 2
    assert main(["info", "--model", "jitnet", "--resolution", "big"]) == 2
