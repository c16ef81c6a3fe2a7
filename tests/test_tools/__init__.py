"""Tests of the command-line tools in ``tools/``."""
import importlib.util
import sys
from types import ModuleType

from tests.test_configs.smoke import ROOT


def load_tool(name: str) -> ModuleType:
    """Import ``tools/<name>.py`` as a module (the tools are scripts, not a package)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / 'tools' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # as the import system does (dataclasses look their module up there)
    spec.loader.exec_module(module)
    return module
