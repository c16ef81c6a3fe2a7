"""No committed file holds a path of the machine it was made on."""
import re
import subprocess

from tests.test_configs.smoke import ROOT

#: Absolute paths under the usual per-machine roots (checkouts, homes, temporary folders).
MACHINE_PATH = re.compile(r'(?<![\w.~-])/(?:work|root|home|tmp|Users|mnt|private|var/folders)/')
BINARY = ('.png', '.jpg', '.pth', '.safetensors', '.whl')


def test_no_committed_file_holds_a_machine_path():
    files = subprocess.run(['git', 'ls-files'], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    offenders = []
    for name in files:
        if name.endswith(BINARY) or not (ROOT / name).is_file():
            continue
        for number, line in enumerate((ROOT / name).read_text(errors='replace').splitlines(), 1):
            if MACHINE_PATH.search(line):
                offenders.append(f'{name}:{number}: {line.strip()[:100]}')
    assert not offenders, '\n'.join(offenders[:20])
