#!/usr/bin/env python
"""Write the synthetic demo datasets (COCO instances, DOTA-v1.0, ADE20K layout) under data/demo_* (with
``--shift``: the textured, cluttered target domains of docs/reproduction_first_protocol.md, under data/shift_*)."""
import argparse
import os.path as osp


from flora_mm.data import make_ade20k, make_coco, make_dota

MAKERS = dict(coco=make_coco, dota=make_dota, ade20k=make_ade20k)


def main():
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument('datasets', nargs='*', help=f'any of {list(MAKERS)} (default: all)')
    parser.add_argument('--root', default='data', help='parent directory (default: data/)')
    parser.add_argument('--num-train', type=int)
    parser.add_argument('--num-val', type=int)
    parser.add_argument('--img-size', type=int)
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--shift', action='store_true', help='target domain: texture, clutter, no colour cue')
    args = parser.parse_args()
    unknown = [d for d in args.datasets if d not in MAKERS]
    if unknown:
        parser.error(f'unknown dataset(s) {unknown}; choose from {list(MAKERS)}')
    for name in args.datasets or MAKERS:
        kwargs = {k: v for k, v in dict(num_train=args.num_train, num_val=args.num_val, img_size=args.img_size,
                                         seed=args.seed, shift=args.shift).items() if v is not None}
        out = MAKERS[name](osp.join(args.root, f'{"shift" if args.shift else "demo"}_{name}'), **kwargs)
        print(f'wrote {name} demo data to {out}')


if __name__ == '__main__':
    main()
