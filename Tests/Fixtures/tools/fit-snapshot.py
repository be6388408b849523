#!/usr/bin/env python3
"""Snapshot of fedmix's JSON output on every reference case and on every one of
the randomized cases, to check that a refactoring changes no output bit.

  python3 Tests/Fixtures/tools/fit-snapshot.py OUT.json [--fedmix PATH]
  python3 Tests/Fixtures/tools/fit-snapshot.py --compare A.json B.json
  python3 Tests/Fixtures/tools/fit-snapshot.py --compare A.json B.json --rtol 1e-8 [--atol 1e-12] [--ignore KEY,KEY]

With --rtol, numbers are compared relatively (|a - b| / max(|a|, |b|), exact
zeros and equal numbers count 0; with --atol, differences of at most that size
count 0 too: numbers that are zero to rounding, such as a site effect at θ = 0
or a Newton decrement of 1e-16) and each fit that differs prints its largest
relative difference and where; a fit fails when that exceeds the tolerance or
when a non-numeric value (a string, a list's length) differs, except under the
keys named by --ignore (e.g. bytes_sent,bytes_received,convergence: traffic and
the optimizer's message).

Fits run with --in-process (deterministic); elapsed time is dropped. A
developer tool: the Swift tests do not need Python."""
import csv, json, os, subprocess, sys, tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
REFERENCE = os.path.join(ROOT, "Tests", "Fixtures", "reference")
# The six lme4 reference cases (the repository's copies of the shared data).
CASES = ["cbpp", "contraception", "dyestuff", "exam", "pastes", "sleepstudy"]
RANDOMIZED = os.path.join(ROOT, "Tests", "Fixtures", "randomized")
VOLATILE = {"elapsed_seconds"}


def strip(x):
    if isinstance(x, dict):
        return {k: strip(v) for k, v in x.items() if k not in VOLATILE}
    if isinstance(x, list):
        return [strip(v) for v in x]
    return x


def run(fedmix, sites, formula, family, method, nagq):
    cmd = [fedmix, "local", sites, "--formula", formula, "--format", "json", "--in-process", "--quiet"]
    if family and family != "gaussian":
        cmd += ["--family", family]
    if method == "ML":
        cmd += ["--ml"]
    if nagq and nagq > 1:
        cmd += ["--nagq", str(nagq)]
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        return {"exit": p.returncode, "stderr": p.stderr.strip()[-400:]}
    return strip(json.loads(p.stdout))


def split_sites(path, tmp):
    with open(path) as f:
        rows = list(csv.DictReader(f))
    fields = [c for c in rows[0].keys()]
    by = {}
    for r in rows:
        by.setdefault(r["site"], []).append(r)
    for s, rs in by.items():
        with open(os.path.join(tmp, f"{s}.csv"), "w", newline="") as f:
            w = csv.DictWriter(f, fieldnames=fields)
            w.writeheader()
            w.writerows(rs)
    return tmp


def snapshot(fedmix):
    out = {}
    for case in CASES:
        ref = json.load(open(os.path.join(REFERENCE, case, "reference.json")))
        for name, fit in ref["fits"].items():
            method = fit.get("method", "")
            nagq = 1
            if "nAGQ=" in method:
                nagq = int(method.split("nAGQ=")[1].split()[0])
            out[f"{case}/{name}"] = run(fedmix, os.path.join(REFERENCE, case, "sites"), fit["formula"],
                                        fit.get("family", "gaussian"), "ML" if method == "ML" else "REML", nagq)
    refs = json.load(open(os.path.join(RANDOMIZED, "references.json")))
    for d in refs["datasets"][:]:
        data = os.path.join(RANDOMIZED, "data", d["id"] + ".csv")
        if not os.path.exists(data):
            continue
        with tempfile.TemporaryDirectory() as tmp:
            split_sites(data, tmp)
            for fit in sorted(d["fits"]):
                method = "ML" if fit == "ml" else "REML"
                nagq = 1
                if fit.startswith("agq"):
                    nagq = int(fit[3:] or 5)
                out[f"randomized/{d['id']}/{fit}"] = run(fedmix, tmp, d["formula"], d["family"], method, nagq)
    return out


def compare(a, b):
    A, B = json.load(open(a)), json.load(open(b))
    differ = 0
    for k in sorted(set(A) | set(B)):
        if A.get(k) != B.get(k):
            differ += 1
            print(f"DIFFERS: {k}")
            diffs(A.get(k), B.get(k), k)
    print(f"{len(set(A) | set(B))} fits, {differ} differ")
    return 1 if differ else 0


def compare_rtol(a, b, rtol, atol, ignore):
    A, B = json.load(open(a)), json.load(open(b))
    keys = sorted(set(A) | set(B))
    identical, failing, worst_all = 0, [], (0.0, "")
    for k in keys:
        if A.get(k) == B.get(k):
            identical += 1
            continue
        worst, other = [0.0, ""], []
        walk(A.get(k), B.get(k), k, ignore, atol, worst, other)
        bad = worst[0] > rtol or other
        print(f"{'EXCEEDS' if bad else 'within '}: {k}: largest relative difference {worst[0]:.3g} at {worst[1]}")
        for o in other[:5]:
            print(f"  non-numeric: {o}")
        if bad:
            failing.append(k)
        if worst[0] > worst_all[0]:
            worst_all = (worst[0], worst[1])
    print(f"{len(keys)} fits: {identical} bit-identical, {len(keys) - identical - len(failing)} within rtol {rtol:g}, "
          f"{len(failing)} exceed; largest relative difference {worst_all[0]:.3g} at {worst_all[1]}")
    return 1 if failing else 0


def walk(x, y, path, ignore, atol, worst, other):
    if path.split(".")[-1].split("[")[0] in ignore:
        return
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            walk(x.get(k), y.get(k), f"{path}.{k}", ignore, atol, worst, other)
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            walk(u, v, f"{path}[{i}]", ignore, atol, worst, other)
    elif isinstance(x, (int, float)) and isinstance(y, (int, float)) and not isinstance(x, bool) and not isinstance(y, bool):
        if abs(x - y) > atol:
            r = abs(x - y) / max(abs(x), abs(y))
            if r > worst[0]:
                worst[0], worst[1] = r, path
    elif x != y:
        other.append(f"{path}: {json.dumps(x)[:100]} -> {json.dumps(y)[:100]}")


def diffs(x, y, path, limit=[0]):
    if isinstance(x, dict) and isinstance(y, dict):
        for k in sorted(set(x) | set(y)):
            diffs(x.get(k), y.get(k), f"{path}.{k}")
    elif isinstance(x, list) and isinstance(y, list) and len(x) == len(y):
        for i, (u, v) in enumerate(zip(x, y)):
            diffs(u, v, f"{path}[{i}]")
    elif x != y and limit[0] < 200:
        limit[0] += 1
        print(f"  {path}: {json.dumps(x)[:120]} -> {json.dumps(y)[:120]}")


if __name__ == "__main__":
    if sys.argv[1] == "--compare":
        if "--rtol" in sys.argv:
            ignore = set(sys.argv[sys.argv.index("--ignore") + 1].split(",")) if "--ignore" in sys.argv else set()
            atol = float(sys.argv[sys.argv.index("--atol") + 1]) if "--atol" in sys.argv else 0.0
            sys.exit(compare_rtol(sys.argv[2], sys.argv[3], float(sys.argv[sys.argv.index("--rtol") + 1]), atol, ignore))
        sys.exit(compare(sys.argv[2], sys.argv[3]))
    fedmix = os.path.join(ROOT, ".build", "debug", "fedmix")
    if "--fedmix" in sys.argv:
        fedmix = sys.argv[sys.argv.index("--fedmix") + 1]
    json.dump(snapshot(fedmix), open(sys.argv[1], "w"), indent=1, sort_keys=True)
