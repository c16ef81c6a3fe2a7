"""``python -m flora_mm.benchmark SETTINGS_JSON METHOD...``: the CPU peak memory of each method, profiled in a
fresh process (:func:`flora_mm.benchmark.harness.peaks_of` starts it); prints ``{method: [peak MB, saved MB]}``."""
import json
import sys

from flora_mm.adapters import routes
from flora_mm.benchmark.harness import Settings, peaks_here


def main(argv: list[str]) -> None:
    if len(argv) < 2:
        raise SystemExit(__doc__)
    settings = Settings(**json.loads(argv[0]))
    if settings.route_policy:
        routes.set_policy(settings.route_policy)
    print(json.dumps(peaks_here(argv[1:], settings)))


if __name__ == '__main__':
    main(sys.argv[1:])
