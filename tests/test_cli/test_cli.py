"""flora_mm.cli: the train / test command lines run from an installed package, and the library launches them
(never the repository's tools/)."""
import ast
import re
import subprocess
import sys

import pytest

from flora_mm import cli
from tests.test_configs.smoke import ROOT


def test_command_runs_the_module_with_this_interpreter():
    assert cli.command(cli.TRAIN, ['a.py', 3]) == [sys.executable, '-m', 'flora_mm.cli.train', 'a.py', '3']


@pytest.mark.parametrize('env, expected', [
    ({}, ['--nnodes=1', '--node_rank=0', '--master_addr=127.0.0.1', '--master_port=29500']),
    (dict(NNODES='2', NODE_RANK='1', MASTER_ADDR='10.0.0.5', PORT='1234'),
     ['--nnodes=2', '--node_rank=1', '--master_addr=10.0.0.5', '--master_port=1234']),
])
def test_torchrun_command_takes_the_nodes_from_the_environment_as_dist_train_sh(monkeypatch, env, expected):
    for key in ('NNODES', 'NODE_RANK', 'MASTER_ADDR', 'PORT'):
        monkeypatch.delenv(key, raising=False)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    cmd = cli.torchrun_command(cli.TRAIN, 2, ['c.py', '--work-dir', 'w'])
    assert cmd == [sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2', *expected,
                   '-m', 'flora_mm.cli.train', 'c.py', '--work-dir', 'w', '--launcher', 'pytorch']
    with pytest.raises(ValueError, match='nproc must be >= 1'):
        cli.torchrun_command(cli.TRAIN, 0, [])


@pytest.mark.subprocess
@pytest.mark.parametrize('name', ['train', 'test'])
def test_module_and_tool_are_one_command_line(tmp_path, name):
    """``python -m flora_mm.cli.NAME`` works outside the repository and is what ``tools/NAME.py`` runs."""
    module = subprocess.run([sys.executable, '-m', f'flora_mm.cli.{name}', '--help'], cwd=tmp_path,
                            capture_output=True, text=True, timeout=300)
    tool = subprocess.run([sys.executable, str(ROOT / 'tools' / f'{name}.py'), '--help'], cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert module.returncode == 0 == tool.returncode, module.stderr + tool.stderr
    assert '--cfg-options' in module.stdout
    # argparse names the program after argv[0]: the rest of the help is the same parser
    assert module.stdout.split('\n', 1)[1] == tool.stdout.split('\n', 1)[1]


def _tool_paths(tree: ast.AST):
    """Where a module builds a path into tools/ or runs a file there: ``x / 'tools'``, or a literal
    ``'tools/NAME.py'`` (``.sh``) in a command list or given to ``Path`` / ``open`` (a tool named in a message or
    as the generator of a document block is no path)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.BinOp) and isinstance(node.op, ast.Div) and isinstance(node.right, ast.Constant) \
                and node.right.value == 'tools':
            yield node.lineno, "/ 'tools'"
        elif isinstance(node, (ast.List, ast.Tuple, ast.Call)):
            if isinstance(node, ast.Call) and getattr(node.func, 'id', getattr(node.func, 'attr', None)) not in (
                    'Path', 'open'):
                continue
            for item in (node.elts if not isinstance(node, ast.Call) else node.args):
                if isinstance(item, ast.Constant) and isinstance(item.value, str) \
                        and re.fullmatch(r'(\./)?tools/\w+\.(py|sh)', item.value):
                    yield item.lineno, item.value


def test_the_finder_finds_both_forms():
    tree = ast.parse("a = ROOT / 'tools' / 'x.py'\nb = run(['bash', 'tools/dist_train.sh'])\nc = Path('tools/a.py')\n"
                     "d = 'see tools/test.py --help'\ne = markers('tools/reproduce.py', 'summary')")
    assert sorted(_tool_paths(tree)) == [(1, "/ 'tools'"), (2, 'tools/dist_train.sh'), (3, 'tools/a.py')]


def test_the_library_never_needs_the_repository_tools():
    """No module of the package builds a path to a file under tools/ (a pip-installed flora_mm has none)."""
    offenders = [f'{path.relative_to(ROOT)}:{line}: {what}' for path in sorted((ROOT / 'flora_mm').rglob('*.py'))
                 for line, what in _tool_paths(ast.parse(path.read_text()))]
    assert not offenders, offenders
