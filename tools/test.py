#!/usr/bin/env python
"""Evaluate a checkpoint (mmdet / mmseg / mmrotate configs): the command line of :mod:`flora_mm.cli.test`,
``tools/test.py -h`` lists its options. Also ``python -m flora_mm.cli.test`` from an installed package."""
from flora_mm.cli.test import main

if __name__ == '__main__':
    main()
