"""Tests for smcheck.presets: the listed names exist, arrays are deterministic float64 inputs."""

import numpy as np
import pytest

from smcheck.exceptions import InputError
from smcheck.presets import PRESETS, Preset, get_preset

LISTED = [
    "benign", "overflow", "underflow", "masked", "fully-masked", "ties", "one-hot", "uniform",
    "tiny-spread", "wide-spread", "single", "large-n", "near-overflow-float16",
]


def test_listed_presets_exist_in_order():
    assert list(PRESETS)[: len(LISTED)] == LISTED
    assert len(PRESETS) <= len(LISTED) + 2


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_is_deterministic_float64_and_usable(name):
    preset = get_preset(name)
    assert isinstance(preset, Preset) and preset.name == name
    assert preset.description and "\n" not in preset.description
    a, b = preset.make(), preset.make()
    assert isinstance(a, np.ndarray) and a.dtype == np.float64
    assert a.ndim in (1, 2) and a.size > 0
    np.testing.assert_array_equal(a, b)
    assert not np.isnan(a).any()
    # Each call gives a fresh array, so writing into one cannot corrupt the preset.
    a[...] = 42.0
    np.testing.assert_array_equal(preset.make(), b)


@pytest.mark.parametrize(
    "name, expected",
    [
        ("overflow", [1000, 999, 990]),
        ("underflow", [-1000, -1001, -1002]),
        ("masked", [2.0, -np.inf, 0.5, -np.inf, -1.0, 3.0]),
        ("fully-masked", [[1.0, 2.0, 3.0, -np.inf], [-np.inf] * 4]),
        ("ties", [3, 3, 3, 1, 3]),
        ("one-hot", [50, 0, 0, 0, 0, 0, 0, 0]),
        ("uniform", [0.0] * 10),
        ("tiny-spread", [1 + k * 1e-12 for k in range(10)]),
        ("wide-spread", [2500, 0, -1000, -2000, -3000, -4000, -5000, -6000]),
        ("single", [0.7]),
        ("near-overflow-float16", [11.5, 10.0, 3.0, -2.0]),
    ],
)
def test_preset_values(name, expected):
    np.testing.assert_array_equal(get_preset(name).make(), np.array(expected, dtype=np.float64))


def test_random_presets_use_fixed_seeds():
    np.testing.assert_array_equal(
        get_preset("benign").make(), np.random.default_rng(0).standard_normal(16)
    )
    large = get_preset("large-n").make()
    assert large.shape == (100_000,)
    np.testing.assert_array_equal(large, np.random.default_rng(1).standard_normal(100_000) * 3)


def test_extreme_presets_hit_their_thresholds():
    assert get_preset("overflow").make().max() > np.log(np.finfo(np.float64).max)
    smallest_subnormal = np.nextafter(0.0, 1.0)
    assert get_preset("underflow").make().max() < np.log(smallest_subnormal)
    assert get_preset("near-overflow-float16").make().max() > np.log(np.finfo(np.float16).max)


def test_unknown_preset():
    with pytest.raises(InputError) as info:
        get_preset("foo")
    assert str(info.value) == "unknown preset 'foo' (see 'smcheck presets')"


def test_unknown_preset_suggests_close_names():
    with pytest.raises(InputError, match="smcheck presets") as info:
        get_preset("overflw")
    assert "'overflow'" in str(info.value)
