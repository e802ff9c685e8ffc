#!/bin/bash
# HpBackprop (the CLI) and PyTorch alternated on the same train/test CSV files (docs/benchmarks.md, "Tables").
# Usage: bench/tables/run.sh DIR [ROUNDS]   with DIR/digits/{train,test}.csv and DIR/cancer/{train,test}.csv
# written by bench_tables.py split (from scikit-learn's bundled data files; never committed).
set -e
dir=$1; rounds=${2:-5}
here=$(cd "$(dirname "$0")" && pwd)
CLI=$here/../../src/Managed/HpBackprop.Cli/bin/Release/net10.0/HpBackprop.Cli
for round in $(seq "$rounds"); do
 for ds in "digits digit 64 64 10" "cancer diagnosis 30 16 2"; do
  set -- $ds
  "$CLI" train --csv "$dir/$1/train.csv" --target "$2" --dev 0 --test 0 --layers "linear:$3x$4,relu,linear:$4x$5" \
     --optimizer adamw --lr 0.001 --schedule constant --batch 32 --epochs 100 --out "$dir/$1.safetensors" --json 2>/dev/null \
     | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print('hpbackprop $1 round $round: steps', d['steps'], 'us/step', d['us_per_step'], end=' ')"
  "$CLI" eval --model "$dir/$1.safetensors" --csv "$dir/$1/test.csv" --json \
     | /usr/bin/python3 -c "import json,sys; m=json.load(sys.stdin)['metrics']; print('test', m['correct'], '/', m['rows'])"
  /usr/bin/python3 "$here/bench_tables.py" torch "$dir/$1/train.csv" "$dir/$1/test.csv" "$2" "$4" 100 32 cross_entropy \
     | /usr/bin/python3 -c "import json,sys; d=json.load(sys.stdin); print('pytorch $1 round $round: steps', d['steps'], 'us/step', d['us_per_step'], 'test', d['correct'], '/', d['test_rows'])"
 done
done
