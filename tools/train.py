#!/usr/bin/env python
"""Train a detector / segmentor (mmdet / mmseg / mmrotate configs): the command line of :mod:`flora_mm.cli.train`,
``tools/train.py -h`` lists its options. Also ``python -m flora_mm.cli.train`` from an installed package."""
from flora_mm.cli.train import main

if __name__ == '__main__':
    main()
