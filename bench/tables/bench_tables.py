# The PyTorch side of docs/benchmarks.md, "Tables" (run by run.sh), and the data preparation:
#   bench_tables.py sklearn SKLEARN_DATA_DIR OUTDIR   -> OUTDIR/digits.csv, OUTDIR/cancer.csv with a header (from the
#                                                        files scikit-learn ships: digits.csv.gz, breast_cancer.csv)
#   bench_tables.py split DATA.csv TARGET OUTDIR SEED -> OUTDIR/train.csv, OUTDIR/test.csv (stratified 80/20, seeded)
#   bench_tables.py torch TRAIN.csv TEST.csv TARGET HIDDEN EPOCHS BATCH LOSS -> one JSON line: test accuracy, us/step
# The torch run: the training rows' mean and population standard deviation standardise both files,
# Linear(D, HIDDEN), ReLU, Linear(HIDDEN, K), AdamW(lr 1e-3, weight decay 0.01), epochs of shuffled minibatches
# without replacement (the last partial one dropped), one thread; the time is that of the training loop alone.
import sys, json, time, csv, gzip
import numpy as np
def read(path, target):
    with open(path) as f:
        r = csv.reader(f); head = next(r); rows = list(r)
    t = head.index(target)
    X = np.array([[float(v) for i, v in enumerate(row) if i != t] for row in rows], dtype=np.float32)
    y = [row[t] for row in rows]
    return head, t, rows, X, y
if sys.argv[1] == "sklearn":
    src, out = sys.argv[2], sys.argv[3]
    lines = open(f"{src}/breast_cancer.csv").read().strip().split("\n")[1:]   # line 1: counts and the two names
    with open(f"{out}/cancer.csv", "w") as f:
        f.write(",".join([f"f{i}" for i in range(30)] + ["diagnosis"]) + "\n")
        for r in lines:
            c = r.split(","); f.write(",".join(c[:30]) + "," + ("malignant" if c[30] == "0" else "benign") + "\n")
    rows = gzip.open(f"{src}/digits.csv.gz", "rt").read().strip().split("\n")
    with open(f"{out}/digits.csv", "w") as f:
        f.write(",".join([f"p{i}" for i in range(64)] + ["digit"]) + "\n")
        for r in rows:
            c = r.split(","); f.write(",".join(str(int(float(x))) for x in c[:64]) + "," + str(int(float(c[64]))) + "\n")
    sys.exit(0)
if sys.argv[1] == "split":
    path, target, out, seed = sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5])
    head, t, rows, X, y = read(path, target)
    rng = np.random.default_rng(seed)
    test = []
    for label in sorted(set(y)):
        idx = np.array([i for i, v in enumerate(y) if v == label]); rng.shuffle(idx)
        test += list(idx[: int(round(0.2 * len(idx)))])
    test = set(test)
    for name, keep in (("train", lambda i: i not in test), ("test", lambda i: i in test)):
        with open(f"{out}/{name}.csv", "w", newline="") as f:
            w = csv.writer(f, lineterminator="\n"); w.writerow(head)
            for i, row in enumerate(rows):
                if keep(i): w.writerow(row)
    sys.exit(0)
import torch
torch.set_num_threads(1)
_, tr, epochs, batch, loss = sys.argv[1], sys.argv[2:4], int(sys.argv[6]), int(sys.argv[7]), sys.argv[8]
target, hidden = sys.argv[4], int(sys.argv[5])
_, _, _, Xtr, ytr = read(sys.argv[2], target)
_, _, _, Xte, yte = read(sys.argv[3], target)
labels = sorted(set(ytr), key=lambda l: (0, int(l)) if l.lstrip("-").isdigit() else (1, l))
ytr = np.array([labels.index(v) for v in ytr]); yte = np.array([labels.index(v) for v in yte])
mean = Xtr.astype(np.float64).mean(0); std = Xtr.astype(np.float64).std(0); std[std == 0] = 1
mean = mean.astype(np.float32); std = std.astype(np.float32)
Xtr = (Xtr - mean) / std; Xte = (Xte - mean) / std
k = len(labels) if loss == "cross_entropy" else 1
torch.manual_seed(1)
model = torch.nn.Sequential(torch.nn.Linear(Xtr.shape[1], hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, k))
opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.01)
lossf = torch.nn.CrossEntropyLoss() if k > 1 else torch.nn.BCEWithLogitsLoss()
Xt = torch.from_numpy(Xtr); Yt = torch.from_numpy(ytr) if k > 1 else torch.from_numpy(ytr.astype(np.float32)).unsqueeze(1)
g = torch.Generator().manual_seed(1)
per = len(Xt) // batch; steps = per * epochs
t0 = time.perf_counter()
for e in range(epochs):
    perm = torch.randperm(len(Xt), generator=g)
    for s in range(per):
        idx = perm[s * batch:(s + 1) * batch]
        opt.zero_grad(set_to_none=True)
        l = lossf(model(Xt[idx]), Yt[idx]); l.backward(); opt.step()
sec = time.perf_counter() - t0
with torch.no_grad():
    z = model(torch.from_numpy(Xte))
    pred = z.argmax(1).numpy() if k > 1 else (z[:, 0] > 0).numpy().astype(int)
print(json.dumps({"steps": steps, "train_seconds": round(sec, 4), "us_per_step": round(sec * 1e6 / steps, 2),
                  "test_accuracy": float((pred == yte).mean()), "correct": int((pred == yte).sum()), "test_rows": len(yte)}))
