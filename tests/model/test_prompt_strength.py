"""The prompt-strength diagnostic (anatoseg.experiments.prompt_strength): how far a network's prompt paths
move its decoder features."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from anatoseg.experiments import prompt_strength
from anatoseg.nets import NetConfig, build_network

TINY = NetConfig.preset("tiny")
PATCH = (16, 16, 16)


def _run(net):
    torch.manual_seed(1)
    norms = prompt_strength.UpdateNorms(prompt_strength.prompt_modules(net))
    with torch.no_grad():
        net(torch.randn(1, 2, *PATCH), torch.randint(0, TINY.num_organs + 1, (1, *PATCH)))
    norms.close()
    return norms.ratios()


def test_the_shut_prompt_paths_measure_zero_and_opened_ones_do_not():
    torch.manual_seed(0)
    net = build_network("anatoseg", TINY).eval()
    stages = [str(s) for s in TINY.hcca_stages]
    assert sorted(prompt_strength.prompt_modules(net)) == sorted(
        [f"hcca {s}" for s in stages] + [f"inject {s}" for s in stages])
    assert all(ratio == 0.0 for ratio in _run(net).values())  # zero gates, zero HCCA output projection
    learned = prompt_strength.learned_values(net)
    assert learned[f"gate {stages[0]}"] == [0.0] and learned[f"occupancy scale {stages[0]}"] == [1.0] * TINY.num_heads
    with torch.no_grad():
        for s in stages:
            net.inject[s].gate.fill_(0.5)
            net.hcca[s].w_o.normal_(std=0.1)
    opened = _run(net)
    assert all(ratio > 0 for ratio in opened.values())
    assert not net.inject[stages[0]]._forward_hooks  # close() took the hooks off
    hcca_only = {k: v for k, v in opened.items() if k.startswith("hcca")}
    rows = prompt_strength.table({"opened": {"ratios": opened, "learned": learned, "cases": 1},
                                  "no injection": {"ratios": hcca_only, "learned": {}, "cases": 1}})
    assert rows[0].startswith("| model | cases | ‖Δ‖/‖x‖ hcca") and rows[2].startswith("| opened | 1 | ")
    assert "nan" not in rows[3] and rows[3].count("–") == len(stages) + len(learned)


def test_a_network_without_prompts_is_refused_in_one_line(tmp_path, capsys):
    for net in (build_network("anatoseg", dataclasses.replace(TINY, use_prompts=False)),
                build_network("unet", TINY, PATCH)):
        with pytest.raises(ValueError, match="has no organ prompts"):
            prompt_strength.prompt_modules(net)
    assert prompt_strength.main([str(tmp_path / "model.pt"), "--data", str(tmp_path), "--cases", "0"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("error: --cases must be at least 1") and err.count("\n") == 1
