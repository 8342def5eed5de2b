"""DataLoader defaults: ``data.num_workers`` None (auto) feeds a ``base`` step on an H100 from the measured
per-worker patch rate, capped by the machine's cores; pinned memory only with CUDA."""

import math

import pytest

from anatoseg.configbase import apply_overrides
from anatoseg.errors import ConfigError
from anatoseg.stage3.config import Config
from anatoseg.training.sampling import BASE_STEP_S, PATCHES_PER_S_PER_WORKER, auto_num_workers


def test_eight_core_machine_feeds_a_base_step():
    workers = auto_num_workers(2, True, cpu_count=8, local_ranks=1)
    assert workers == math.ceil(2 / (PATCHES_PER_S_PER_WORKER * BASE_STEP_S)) <= 7
    assert workers * PATCHES_PER_S_PER_WORKER * BASE_STEP_S >= 2  # patches built per step >= patches used


@pytest.mark.parametrize("cpus, ranks, expected", [(2, 1, 1), (8, 4, 1), (1, 1, 0), (64, 8, 4)],
                         ids=lambda v: str(v))
def test_capped_by_the_cores_each_process_gets(cpus, ranks, expected):
    assert auto_num_workers(2, True, cpu_count=cpus, local_ranks=ranks) == expected


def test_no_workers_without_cuda():
    assert auto_num_workers(2, False, cpu_count=64) == 0


def test_config_defaults_and_overrides():
    config = Config()
    assert config.data.num_workers is None and config.data.pin_memory is None
    config = apply_overrides(Config(), ["data.num_workers=3", "data.pin_memory=false"]).validate()
    assert config.data.num_workers == 3 and config.data.pin_memory is False
    with pytest.raises(ConfigError, match="num_workers"):
        apply_overrides(Config(), ["data.num_workers=-1"]).validate()
