#!/usr/bin/env python3
"""PyTorch reads an HpBackprop checkpoint and agrees with it.

Usage: check_checkpoint.py MODEL.safetensors WORDS.txt -- HPBACKPROP_COMMAND...

Loads the checkpoint with the project's own safetensors reader (st.py) into torch
tensors, builds every (context, target) example of WORDS.txt with the checkpoint's
vocabulary and block size (SPEC section 1), computes the mean loss with the
checkpoint's inference batch-norm statistics (bnmean, bnvar; SPEC section 5), then
runs `HPBACKPROP_COMMAND eval --model MODEL --data WORDS` and fails unless both
losses agree to 1e-5 relative. Exit 0 on agreement, 1 otherwise.
"""
import subprocess
import sys

import numpy as np
import torch

import st


def main(argv):
    if len(argv) < 4 or argv[2] != "--":
        print(__doc__)
        return 2
    model, words_path, cmd = argv[0], argv[1], argv[3:]
    tensors, meta = st.load(model)
    assert meta["format"] == "hpbackprop-mlp/1", meta.get("format")
    P = {k: torch.from_numpy(np.array(v, dtype=np.float64)) for k, v in tensors.items()}
    vocab = meta["vocab"]
    B = int(meta["block_size"])
    eps = float(meta["eps"])
    stoi = {c: i for i, c in enumerate(vocab)}
    X, Y = [], []
    for line in open(words_path, encoding="utf-8"):
        w = line.strip()
        if not w:
            continue
        ctx = [0] * B
        for ch in w + ".":
            ix = stoi[ch] if ch != "." else 0
            X.append(list(ctx))
            Y.append(ix)
            ctx = ctx[1:] + [ix]
    X = torch.tensor(X)
    Y = torch.tensor(Y)
    emb = P["C"][X].view(len(X), -1)
    hprebn = emb @ P["W1"] + P["b1"]
    h = torch.tanh(P["bngain"] * (hprebn - P["bnmean"]) * (P["bnvar"] + eps) ** -0.5 + P["bnbias"])
    logits = h @ P["W2"] + P["b2"]
    torch_loss = torch.nn.functional.cross_entropy(logits, Y).item()
    out = subprocess.run(cmd + ["eval", "--model", model, "--data", words_path], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stdout, out.stderr)
        return 1
    ours = float(out.stdout.split()[1])
    rel = abs(ours - torch_loss) / abs(torch_loss)
    ok = rel <= 1e-5
    print(f"checkpoint {model}: PyTorch loss {torch_loss:.7f}, hpbackprop eval {ours:.7f}, "
          f"relative difference {rel:.2e} over {len(X)} examples: {'OK' if ok else 'MISMATCH'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
