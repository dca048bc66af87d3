"""Resident memory an import adds to a process that has torch, timm and torchvision (issue 27 §3).

Each import runs in a fresh interpreter (one torch thread) after ``import torch, timm,
torchvision``; the figure is the growth of VmRSS and its largest parts by mapping (the
heap, anonymous memory — mostly Python objects — and shared libraries). The default list
is what ``import torchmetrics`` (zoo's metrics) brings in when the packages are installed.

    python benchmarks/import_cost.py ["import torchmetrics" "import scipy.signal" ...]
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

DEFAULT = ["import torchmetrics", "import scipy.signal", "import matplotlib.pyplot",
           "from transformers import AutoModel, AutoTokenizer"]

CHILD = r"""
import json, sys
def by_mapping():
    out, cur = {}, None
    for line in open("/proc/self/smaps"):
        parts = line.split()
        if len(parts) >= 5 and "-" in parts[0] and ":" not in parts[0]:
            cur = parts[5] if len(parts) > 5 else "[anon]"
        elif parts[0] == "Rss:":
            out[cur] = out.get(cur, 0) + int(parts[1])
    return out
import torch, timm, torchvision
torch.set_num_threads(1)
before = by_mapping()
try:
    exec(sys.argv[1])
except ImportError as exc:
    print(json.dumps({"error": f"not installed: {exc.name}"})); sys.exit(0)
after = by_mapping()
delta = {k: after.get(k, 0) - before.get(k, 0) for k in set(before) | set(after)}
top = sorted(delta.items(), key=lambda kv: -kv[1])[:3]
print(json.dumps({"mb": round(sum(delta.values()) / 1024, 1),
                  "parts": {os.path.basename(k): round(v / 1024, 1) for k, v in top}}))
""".replace("import json, sys", "import json, os, sys")


def main(argv: list[str] | None = None) -> int:
    statements = (argv if argv is not None else sys.argv[1:]) or DEFAULT
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    results = {}
    for statement in statements:
        out = subprocess.run([sys.executable, "-c", CHILD, statement], env=env,
                             capture_output=True, text=True)
        line = out.stdout.strip().splitlines()[-1] if out.stdout.strip() else ""
        results[statement] = json.loads(line) if line.startswith("{") else {
            "error": (out.stderr.strip().splitlines() or ["failed"])[-1]}
        r = results[statement]
        print(f"{statement:55s} " + (f"+{r['mb']:.1f} MB  {r['parts']}" if "mb" in r
                                      else r["error"]), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
