"""Build automl/datasets/fortunes8.csv: an 8-way topic dataset from Debian's `fortunes` package.

    apt-get install -y fortunes
    python benchmarks/datasets/make_fortunes8.py

Each category file holds items separated by a line that is only "%". Internal whitespace is
collapsed to single spaces; empty items are skipped. The output is deterministic (categories in
sorted order, items in file order). The fortune files are BSD-licensed.
"""

from __future__ import annotations

import argparse
import csv
import re
from pathlib import Path

CATEGORIES = ("computers", "food", "law", "love", "medicine", "politics", "science", "sports")
FORTUNES_DIR = Path("/usr/share/games/fortunes")
OUT = Path(__file__).resolve().parents[2] / "automl" / "datasets" / "fortunes8.csv"


def read_items(path: Path) -> list[str]:
    """Split a fortune file on lines holding only "%", collapsing whitespace in each item."""
    items: list[str] = []
    current: list[str] = []
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.strip() == "%":
            items.append(" ".join(current))
            current = []
        else:
            current.append(line)
    items.append(" ".join(current))
    cleaned = (re.sub(r"\s+", " ", item).strip() for item in items)
    return [item for item in cleaned if item]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--src", type=Path, default=FORTUNES_DIR)
    parser.add_argument("--out", type=Path, default=OUT)
    args = parser.parse_args()
    rows = [(text, cat) for cat in CATEGORIES for text in read_items(args.src / cat)]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", encoding="utf-8", newline="") as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    print(f"wrote {len(rows)} rows to {args.out} ({args.out.stat().st_size / 1e6:.2f} MB)")


if __name__ == "__main__":
    main()
