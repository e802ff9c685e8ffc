#!/usr/bin/python3
"""Write the (context, next id) examples of a word list as an examples file.

Usage: words_examples.py CHECKPOINT.safetensors WORDS.txt OUT.safetensors

Uses the checkpoint's vocabulary (`vocab`, id order) and context length
(`block_size`): for each word, the context starts as block_size boundary ids (0)
and shifts left after each character of word + '.' (one example per character).
OUT holds `x` I64 [n, block_size] and `y` I64 [n], the form `eval --data` and
check_stack_checkpoint.py take.
"""
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import st  # noqa: E402


def main(argv):
    if len(argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    _, meta = st.load(argv[0])
    vocab, block = meta["vocab"], int(meta["block_size"])
    stoi = {c: i for i, c in enumerate(vocab)}
    xs, ys = [], []
    for line in open(argv[1], encoding="utf-8"):
        w = line.strip()
        if not w:
            continue
        ctx = [0] * block
        for ch in w + ".":
            ix = stoi[ch]
            xs.append(list(ctx))
            ys.append(ix)
            ctx = ctx[1:] + [ix]
    st.save(argv[2], {"x": np.array(xs, dtype=np.int64), "y": np.array(ys, dtype=np.int64)})
    print(f"{argv[2]}: {len(ys)} examples of {argv[1]}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
