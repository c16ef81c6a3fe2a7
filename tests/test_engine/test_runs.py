"""flora_mm.engine.runs: what a run file records of where it ran."""
from importlib import metadata

import numpy
import pytest
import torch

from flora_mm.engine import runs


def test_environment_records_the_cpu_kernels_and_the_package_versions(monkeypatch):
    monkeypatch.setattr(runs, 'ENVIRONMENT_PACKAGES', ('torch', 'numpy', 'no-such-distribution-flora-mm'))
    env = runs.environment()
    assert env['packages'] == {'torch': torch.__version__.split('+')[0], 'numpy': numpy.__version__,  # the modules'
                               'no-such-distribution-flora-mm': None}  # own versions, and None for a missing one
    # the kernels torch dispatches to: one of the instruction sets its CPU build names
    assert env['cpu_capability'] in {'DEFAULT', 'NO AVX', 'AVX2', 'AVX512', 'VSX', 'ZVECTOR', 'SVE256', 'SVE'}
    assert env['cpu'] and env['python'].count('.') == 2


@pytest.mark.parametrize('cpuinfo,expected', [
    ('processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7B12\nflags\t: fpu\n', 'AMD EPYC 7B12'),
    ('processor\t: 0\nflags\t: fpu\n', None),  # no model name: the platform's word instead
])
def test_the_cpu_model_comes_from_cpuinfo(tmp_path, monkeypatch, cpuinfo, expected):
    (tmp_path / 'cpuinfo').write_text(cpuinfo)
    monkeypatch.setattr(runs.platform, 'processor', lambda: 'the-platform-word')
    assert runs._cpu_model(tmp_path / 'cpuinfo') == (expected or 'the-platform-word')
    assert runs._cpu_model(tmp_path / 'missing') == 'the-platform-word'  # no /proc (macOS, Windows)


def test_every_recorded_package_is_a_distribution_of_this_install():
    """A misspelt distribution name would be recorded as None for ever: every name must resolve here, where the
    whole stack is installed."""
    for name in runs.ENVIRONMENT_PACKAGES:
        assert metadata.version(name), name
