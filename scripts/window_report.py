#!/usr/bin/env python3
"""The bookkeeping of scripts/gpu-window.sh (standard library only: it runs on the GPU machine).

  window_report.py summary WORK OUT    classify every job of WORK/jobs.tsv, write OUT/summary.json
                                       and OUT/summary.md (non-passing rows last)
  window_report.py print SUMMARY.json  print summary.md's table; exit 1 if a job failed or timed out
  window_report.py rerun SUMMARY.json  the jobs to repeat: "stage<TAB>name<TAB>Catch2 spec" lines
  window_report.py trainer DIR CMD...  run the trainer CMD with --metrics DIR/metrics.jsonl and
                                       check that its loss starts near ln V and falls

Statuses: pass, fail, timeout, not_run (no time or tool left), skipped (no device: only when the
program said so with "[kiln-no-device]" and nvidia-smi listed no GPU).
"""
import html
import json
import math
import os
import re
import shutil
import subprocess
import sys

NO_DEVICE_MARKER = "[kiln-no-device]"
STAGES = ["preflight", "smoke", "tests", "trainer", "hfcheck", "memcheck", "racecheck", "bench"]
# compute-sanitizer's words when it cannot work on this device or system (gVisor, old driver).
SANITIZER_REFUSED = re.compile(
    r"Device not supported|not supported on this (device|platform)|Unable to (connect|initialize)"
    r"|Target application terminated before first instrumented API call", re.I)


def read_text(path, limit=4 << 20):
    try:
        with open(path, "rb") as f:
            data = f.read()
    except OSError:
        return ""
    if len(data) > limit:
        data = data[: limit // 4] + data[-3 * limit // 4:]
    return data.decode("utf-8", "replace")


def parse_catch_xml(text):
    """Test cases of a (possibly cut-off) streamed Catch2 XML report: (name, ok or None, seconds).

    ok is None for the case that was running when the process died or was killed."""
    cases = []
    pattern = re.compile(r'<TestCase\s+name="([^"]*)"|<OverallResult\s+success="(true|false)"'
                         r'(?:\s+durationInSeconds="([^"]*)")?')
    for m in pattern.finditer(text):
        if m.group(1) is not None:
            cases.append([html.unescape(m.group(1)), None, None])
        elif cases and cases[-1][1] is None:
            cases[-1][1] = m.group(2) == "true"
            cases[-1][2] = float(m.group(3)) if m.group(3) else None
    return cases


def read_env(work):
    env = {}
    for line in read_text(os.path.join(work, "env.txt")).splitlines():
        if "=" in line:
            k, v = line.split("=", 1)
            env[k] = v
    return env


def device_environment(work):
    """GPU, driver, clocks and library versions from the preflight log."""
    log = read_text(os.path.join(work, "logs", "preflight.log"))
    result = {}
    lines = log.splitlines()
    for i, line in enumerate(lines):
        if line.startswith("name, driver_version") and i + 1 < len(lines):
            keys = [k.strip() for k in line.split(",")]
            values = [v.strip() for v in lines[i + 1].split(",")]
            if len(values) == len(keys):
                result["gpu"] = dict(zip(keys, values))
    if "== kiln_info" in log:
        info = log.split("== kiln_info", 1)[1].split("\n== ", 1)[0]
        result["kiln_info"] = [l for l in info.splitlines() if l.strip()][:40]
    missing = [l for l in lines if ": MISSING " in l]
    if missing:
        result["missing_libraries"] = missing
    return result


def classify(row, work, gpu_present):
    stage, name, rc, seconds, kind, note = (row + [""] * 6)[:6]
    job = {"stage": stage, "name": name, "status": "fail", "seconds": int(seconds or 0),
           "exit": None if rc == "-" else int(rc), "failing_tests": []}
    if kind in ("test", "sanitizer") and note:
        job["spec"] = note
        note = ""
    log_name = f"logs/{stage}.{name}.log"
    log = read_text(os.path.join(work, log_name))
    if os.path.exists(os.path.join(work, log_name)):
        job["log"] = log_name
    if rc == "-":
        # An optional stage that cannot run here (hfcheck without transformers) is skipped too.
        job["status"] = "skipped" if note.startswith(("no-device", "optional")) else "not_run"
        job["note"] = note.replace("no-device: ", "")
        return job
    rc = int(rc)
    xml_path = os.path.join(work, "xml", f"{stage}.{name}.xml")
    cases = parse_catch_xml(read_text(xml_path)) if os.path.exists(xml_path) else []
    if cases:
        job["cases_run"] = len(cases)
        job["cases_passed"] = sum(1 for c in cases if c[1])
        job["failing_tests"] = [c[0] for c in cases if c[1] is False]
        if cases[-1][1] is None:
            job["interrupted_in"] = cases[-1][0]
    says_no_device = NO_DEVICE_MARKER in log
    if kind == "preflight":
        job["status"] = "pass" if rc == 0 else "fail"
        job["note"] = note
        return job
    if rc in (124, 137):
        job["status"] = "timeout"
        # Catch2 closes the case it was in when TERM came as failed (a FatalErrorCondition);
        # after a KILL the case is left open (interrupted_in).
        where = job.get("interrupted_in") or (cases[-1][0] if cases and cases[-1][1] is False
                                              and "SIGTERM" in read_text(xml_path)[-4000:] else None)
        job["note"] = "killed at its time limit" + (f" in: {where}" if where else "")
        return job
    if rc == 77:
        if says_no_device and not gpu_present:
            job["status"] = "skipped"
            job["note"] = "no device"
        else:
            job["note"] = ("exit 77 while a GPU is present" if gpu_present else
                           "exit 77 without the no-device marker")
        return job
    if kind == "sanitizer":
        summary = re.findall(r"ERROR SUMMARY: (\d+) error", log)
        if SANITIZER_REFUSED.search(log) and not summary:
            job["status"] = "not_run"
            job["note"] = "compute-sanitizer refused: " + SANITIZER_REFUSED.search(log).group(0)
            return job
        if not summary:
            job["note"] = f"no error summary (exit {rc})"
            return job
        errors = sum(int(n) for n in summary)
        job["sanitizer_errors"] = errors
        job["status"] = "pass" if errors == 0 else "fail"
        job["note"] = f"{errors} errors" + (
            f"; the tests themselves exited {rc}" if errors == 0 and rc != 0 else "")
        return job
    if rc == 0:
        job["status"] = "pass"
        if job["failing_tests"]:
            job["status"] = "fail"
            job["note"] = "exit 0 but the report shows failures"
        return job
    if rc > 128:
        job["note"] = f"killed by signal {rc - 128}"
    elif kind == "test" and not cases and os.path.exists(xml_path):
        job["note"] = f"exit {rc}: no test case ran (spec {job.get('spec', '')})"
    else:
        tail = [l for l in log.splitlines() if l.strip()][-1:] or [""]
        job["note"] = f"exit {rc}: {tail[0][:200]}"
    if "interrupted_in" in job:
        job["note"] += f"; died in: {job['interrupted_in']}"
    return job


def summarize(work, out):
    env = read_env(work)
    gpu_present = env.get("gpu_present") == "1"
    rows = [l.split("\t") for l in read_text(os.path.join(work, "jobs.tsv")).splitlines() if l]
    jobs = [classify(r, work, gpu_present) for r in rows]
    order = {s: i for i, s in enumerate(STAGES)}
    jobs.sort(key=lambda j: (order.get(j["stage"], 99), j["name"]))
    counts = {}
    for j in jobs:
        counts[j["status"]] = counts.get(j["status"], 0) + 1
    trainer = {}
    try:
        with open(os.path.join(work, "trainer", "trainer.json")) as f:
            trainer = json.load(f)
    except (OSError, ValueError):
        pass
    summary = {
        "commit": env.get("commit", "unknown"), "seed": env.get("seed"),
        "started": env.get("started"), "finished": env.get("finished"),
        "elapsed_s": int(env["elapsed_s"]) if "elapsed_s" in env else None,
        "budget_s": int(env.get("budget_s", 0) or 0), "gpu_present": gpu_present,
        "rerun_of": env.get("rerun") or None, "test_spec": env.get("test_spec") or None,
        "sanitizer": env.get("sanitizer"), "environment": device_environment(work),
        "trainer": trainer, "counts": counts, "jobs": jobs,
    }
    # Written in WORK, then moved: a kill mid-way leaves no partial or extra file in OUT.
    for name, text in (("summary.json", json.dumps(summary, indent=1)), ("summary.md", markdown(summary))):
        part = os.path.join(work, name + ".part")
        with open(part, "w") as f:
            f.write(text)
        shutil.move(part, os.path.join(out, name))


def row_text(j):
    extra = j.get("note", "")
    if j.get("failing_tests"):
        names = j["failing_tests"]
        extra += ("; " if extra else "") + "failing: " + "; ".join(names[:8]) + (
            f" (+{len(names) - 8} more)" if len(names) > 8 else "")
    if "cases_run" in j:
        extra = f"{j['cases_passed']}/{j['cases_run']} cases passed" + (f"; {extra}" if extra else "")
    return f"| {j['stage']} | {j['name']} | {j['status'].upper() if j['status'] in ('fail', 'timeout') else j['status']} | {j['seconds']} | {extra} |"


def markdown(s):
    gpu = s["environment"].get("gpu", {})
    lines = [f"# kiln GPU window, commit {s['commit']}", "",
             f"seed {s['seed']} (KILN_TEST_SEED), started {s['started']}, "
             f"{s['elapsed_s'] if s['elapsed_s'] is not None else '?'} of {s['budget_s']} s; "
             f"GPU: {gpu.get('name', 'none') if s['gpu_present'] else 'none present'}"
             + (f", driver {gpu.get('driver_version')}" if gpu else ""), ""]
    if s.get("rerun_of"):
        lines += [f"rerun of {s['rerun_of']} (KILN_SYNC_AFTER_LAUNCH=1)", ""]
    if s.get("trainer"):
        t = s["trainer"]
        lines += [f"trainer: loss {t.get('first_loss')} -> {t.get('last_loss')}, "
                  f"{t.get('tokens_per_s')} tok/s, MFU {t.get('mfu')}", ""]
    lines += ["counts: " + ", ".join(f"{k} {v}" for k, v in sorted(s["counts"].items())), ""]
    head = ["| stage | job | status | s | notes |", "|---|---|---|---|---|"]
    ok = [j for j in s["jobs"] if j["status"] in ("pass", "skipped")]
    bad = [j for j in s["jobs"] if j["status"] not in ("pass", "skipped")]
    if ok:
        lines += ["## Passed or skipped", ""] + head + [row_text(j) for j in ok] + [""]
    if bad:
        lines += ["## Not passing (failed, timed out, not run)", ""] + head + [row_text(j) for j in bad] + [""]
    else:
        lines += ["Every job passed or was skipped.", ""]
    return "\n".join(lines)


def print_summary(path):
    with open(path) as f:
        s = json.load(f)
    print(markdown(s))
    bad = [j for j in s["jobs"] if j["status"] in ("fail", "timeout")]
    return 1 if bad else 0


def catch_quote(name):
    return '"' + name.replace("\\", "\\\\").replace('"', '\\"') + '"'


def rerun(path):
    """What to repeat from a previous window: failed or timed-out tests (by case when known),
    the same cases under memcheck, and the failed benchmarks and trainer."""
    with open(path) as f:
        s = json.load(f)
    areas = {}  # area -> set of case names, or None for the whole area
    plans = []
    for j in s["jobs"]:
        if j["status"] not in ("fail", "timeout"):
            continue
        if j["stage"] in ("smoke", "tests", "memcheck", "racecheck"):
            names = list(j.get("failing_tests", []))
            if j.get("interrupted_in"):
                names.append(j["interrupted_in"])
            if not names:
                areas[j["name"]] = None
            elif j["name"] not in areas or areas[j["name"]] is not None:
                areas.setdefault(j["name"], set()).update(names)
        elif j["stage"] in ("bench", "trainer", "hfcheck"):
            plans.append((j["stage"], j["name"], ""))
    for area, names in sorted(areas.items()):
        alternatives = [f"[{area}]"] if names is None else [catch_quote(n) for n in sorted(names)]
        plans.append(("tests", area, ",".join(alternatives)))
        plans.append(("memcheck", area, ",".join(a + "~[api_error]" for a in alternatives)))
    for stage, name, spec in plans:
        print(f"{stage}\t{name}\t{spec}")
    return 0


def trainer(directory, cmd):
    """Runs the trainer, streaming its output, then checks the loss curve from its metrics."""
    metrics = os.path.join(directory, "metrics.jsonl")
    rc = subprocess.call(cmd + ["--metrics", metrics])
    steps = []
    for line in read_text(metrics).splitlines():
        try:
            steps.append(json.loads(line))
        except ValueError:
            pass
    vocab = int(os.environ.get("KILN_TRAINER_VOCAB", "50257"))
    result = {"exit": rc, "steps": len(steps), "ln_vocab": round(math.log(vocab), 3)}
    if steps:
        losses = [s["loss"] for s in steps]
        later = steps[len(steps) // 2:] or steps  # past warm-up (allocation, first launches)
        result.update(first_loss=round(losses[0], 4), last_loss=round(losses[-1], 4),
                      tokens_per_s=round(sorted(s["tokens_per_s"] for s in later)[len(later) // 2]),
                      mfu=round(sorted(s.get("mfu", float("nan")) for s in later)[len(later) // 2], 4))
    problems = []
    if rc != 0:
        problems.append(f"the trainer exited {rc}")
    if len(steps) < 5:
        problems.append(f"only {len(steps)} steps recorded")
    else:
        if abs(steps[0]["loss"] - math.log(vocab)) > 1.0:
            problems.append(f"first loss {steps[0]['loss']:.3f} is not near ln V = {math.log(vocab):.3f}")
        tail = [s["loss"] for s in steps[-3:]]
        if not sum(tail) / len(tail) < steps[0]["loss"] - 0.5:
            problems.append("the loss does not fall")
    result["problems"] = problems
    with open(os.path.join(directory, "trainer.json"), "w") as f:
        json.dump(result, f, indent=1)
    print("trainer check:", json.dumps(result))
    return 0 if not problems else (rc if rc not in (0, 77) else 1)


def main(argv):
    if len(argv) >= 4 and argv[1] == "summary":
        summarize(argv[2], argv[3])
        return 0
    if len(argv) == 3 and argv[1] == "print":
        return print_summary(argv[2])
    if len(argv) == 3 and argv[1] == "rerun":
        return rerun(argv[2])
    if len(argv) >= 4 and argv[1] == "trainer":
        return trainer(argv[2], argv[3:])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
