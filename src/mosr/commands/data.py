"""``mosr data list|show|leaks``: what datasets exist, their splits, licences and overlaps."""

from __future__ import annotations

import argparse

from mosr.data import REGISTRY, dataset_names, find_leaks, licence_text, load_dataset
from mosr.errors import MosrError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("data", help="list, show and leak-check datasets")
    dsub = p.add_subparsers(dest="data_command", metavar="ACTION", required=True)
    dsub.add_parser("list", help="every named dataset with counts, splits and licence").set_defaults(func=_list)
    show = dsub.add_parser("show", help="counts, splits, categories, licence and a few samples of one dataset")
    show.add_argument("name", help="dataset name (or name:split)")
    show.add_argument("-n", type=int, default=3, help="samples to print")
    show.set_defaults(func=_show)
    leaks = dsub.add_parser("leaks", help="exact and near-duplicate prompts between two datasets or splits")
    leaks.add_argument("a")
    leaks.add_argument("b")
    leaks.add_argument("--threshold", type=float, default=0.85)
    leaks.set_defaults(func=_leaks)


def _count(name: str) -> str:
    try:
        return str(len(load_dataset(name)))
    except MosrError:
        return "n/a"


def _list(args: argparse.Namespace) -> int:
    print(f"{'name':24} {'rows':>5}  {'label':8} {'role':11} {'splits':28} licence")
    for name in dataset_names():
        info = REGISTRY[name]
        splits = ",".join(f"{s}={len(load_dataset(f'{name}:{s}'))}" for s in info.splits) if info.splits and _count(name).isdigit() else ",".join(info.splits) or "-"
        print(f"{name:24} {_count(name):>5}  {info.label:8} {info.role:11} {splits:28} {info.licence}")
    return 0


def _show(args: argparse.Namespace) -> int:
    name = args.name.partition(":")[0]
    if name not in REGISTRY:
        load_dataset(args.name)  # raises the standard unknown-dataset error
    info = REGISTRY[name]
    samples = load_dataset(args.name)
    print(f"{args.name}: {info.description}")
    print(f"rows: {len(samples)}   label: {info.label}   role: {info.role}")
    for split in info.splits:
        print(f"  split {split}: {len(load_dataset(f'{name}:{split}'))}")
    cats: dict[str, int] = {}
    for s in samples:
        cats[str(s.category)] = cats.get(str(s.category), 0) + 1
    if len(cats) > 1:
        print("categories: " + ", ".join(f"{c} {n}" for c, n in sorted(cats.items(), key=lambda x: -x[1])))
    print(f"with reference responses: {sum(1 for s in samples if s.reference)}")
    print("\nlicence and source:\n" + licence_text(name).strip())
    print("\nsamples:")
    for s in samples[: args.n]:
        print(f"  [{s.id}] {s.prompt[:160]!r}")
    return 0


def _leaks(args: argparse.Namespace) -> int:
    leaks = find_leaks(load_dataset(args.a), load_dataset(args.b), threshold=args.threshold)
    for leak in leaks:
        print(f"{leak.kind:5} {leak.similarity:.2f}  {leak.a_id} ~ {leak.b_id}: {leak.a_prompt[:70]!r}")
    print(f"{len(leaks)} leak(s) between {args.a} and {args.b}")
    return 1 if leaks else 0
