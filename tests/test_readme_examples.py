"""The README's code examples run: each ```python block whose first line is
``# smcheck-readme-example: NAME`` is executed here as written."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parents[1] / "README.md"
MARKER = "# smcheck-readme-example: "


def readme_examples() -> dict[str, str]:
    """NAME -> the code of each marked ```python block of the README."""
    blocks = re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.M | re.S)
    return {code.split("\n", 1)[0][len(MARKER):].strip(): code
            for code in blocks if code.startswith(MARKER)}


def run_example(name: str, **replace) -> dict:
    """Execute example ``name`` (each ``replace`` key's definition in it swapped for the
    given source) and return its namespace."""
    code = readme_examples()[name]
    for old, new in replace.items():
        assert old in code, old
        code = code.replace(old, new)
    namespace = {"__name__": f"readme_{name.replace('-', '_')}"}
    exec(compile(code, f"README.md[{name}]", "exec"), namespace)  # noqa: S102 - our README
    return namespace


def test_the_readme_has_the_marked_examples():
    assert "own-kernel" in readme_examples()


def test_own_kernel_example_passes_for_torch_softmax():
    pytest.importorskip("torch")
    pytest.importorskip("hypothesis")
    namespace = run_example("own-kernel")
    namespace["test_my_kernel"]()  # the test the README defines, with its own @given


def test_own_kernel_example_fails_a_naive_kernel():
    """The control: the README's test body, with exp(t) / sum exp(t) as the kernel, fails on
    an overflow-edge draw past log(realmax). (Its body, not the @given test: hypothesis would
    spend minutes shrinking the failure.)"""
    pytest.importorskip("torch")
    from hypothesis import find

    import smcheck
    from smcheck.dtypes import dtype_info

    namespace = run_example("own-kernel", **{
        "s = torch.softmax(x, dim=-1)": "s = torch.exp(x) / torch.exp(x).sum(-1, keepdim=True)"})
    log_max = dtype_info("bfloat16").log_max
    x = find(smcheck.strategies.overflow_edge("bfloat16", (8, 256)),
             lambda x: x.max() > log_max)
    with pytest.raises(smcheck.SoftmaxCheckError) as info:
        namespace["test_my_kernel"].hypothesis.inner_test(x)
    assert "reference" in str(info.value) and "overflow" in str(info.value)
