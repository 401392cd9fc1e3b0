#!/usr/bin/env bash
# What a person sees: start `mlflow ui` on loopback over a store and take a headless Chromium
# screenshot of an experiment's runs table (sweep parent runs, readable cell run names).
#
#   tools/screenshot_mlflow.sh [STORE_URI] [OUT_PNG] [EXPERIMENT_NAME]
#   defaults: sqlite:///mlflow.db  docs/img/mlflow_runs.png  (the experiment with most runs)
#
# Needs chromium (Debian: apt-get install -y chromium). The UI is stopped on exit.
set -euo pipefail

uri=${1:-sqlite:///mlflow.db}
out=${2:-docs/img/mlflow_runs.png}
want=${3:-}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${PYTHON:-$here/.venv/bin/python}
mlflow=${MLFLOW:-$here/.venv/bin/mlflow}

chrome=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$chrome" ]; then
    echo "screenshot_mlflow: chromium not found (apt-get install -y chromium)" >&2
    exit 1
fi
case "$uri" in
    sqlite:///*) [ -f "${uri#sqlite:///}" ] || { echo "screenshot_mlflow: no store at $uri" >&2; exit 1; } ;;
esac

port=$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
profile=$(mktemp -d)
log=$(mktemp)
# own process group, so that the UI and its workers stop together
setsid "$mlflow" ui --backend-store-uri "$uri" --host 127.0.0.1 --port "$port" >"$log" 2>&1 &
ui=$!
cleanup() { kill -- -"$ui" 2>/dev/null || true; wait "$ui" 2>/dev/null || true; rm -rf "$profile" "$log"; }
trap cleanup EXIT

base="http://127.0.0.1:$port"
for _ in $(seq 1 240); do
    if "$py" -c "import urllib.request; urllib.request.urlopen('$base/health', timeout=2)" 2>/dev/null; then
        break
    fi
    kill -0 "$ui" 2>/dev/null || { echo "screenshot_mlflow: mlflow ui exited:" >&2; tail -5 "$log" >&2; exit 1; }
    sleep 0.5
done

# the experiment to show: the named one, else the one with the most runs
exp=$("$py" - "$base" "$want" <<'PY'
import json, sys, urllib.request

base, want = sys.argv[1], sys.argv[2]
def post(path, body):
    req = urllib.request.Request(base + "/api/2.0/mlflow/" + path, json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    return json.loads(urllib.request.urlopen(req, timeout=30).read())
exps = post("experiments/search", {"max_results": 1000}).get("experiments", [])
if want:
    exps = [e for e in exps if e["name"] == want]
count = {e["experiment_id"]: len(post("runs/search", {"experiment_ids": [e["experiment_id"]],
                                                      "max_results": 1000}).get("runs", []))
         for e in exps}
if not count:
    print("")
    raise SystemExit
exp = max(count, key=count.get)
# the runs table (MLflow 3 route) in the model-training view, the cell runs and their samples
# (named after experiment, variant and seed) listed rather than folded under the sweep's run
from urllib.parse import quote
flt = quote("tags.`atf.kind` = 'trial'")
order = quote("metrics.`val/nme`")   # any order but creation time lists children flat
print(f"{exp} #/experiments/{exp}/runs?workflowType=machine_learning&searchFilter={flt}"
      f"&orderByKey={order}&orderByAsc=true")
PY
)
page=${exp#* }
exp=${exp%% *}
if [ -z "$exp" ]; then
    echo "screenshot_mlflow: no experiment${want:+ named $want} in $uri" >&2
    exit 1
fi

mkdir -p "$(dirname "$out")"
"$chrome" --headless --no-sandbox --disable-gpu --no-first-run --disable-background-networking \
    --disable-component-update --disable-sync --user-data-dir="$profile" \
    --virtual-time-budget=20000 --screenshot="$(realpath -m "$out")" --window-size=1600,1000 \
    "$base/$page" >/dev/null 2>&1
[ -s "$out" ] || { echo "screenshot_mlflow: chromium wrote no screenshot" >&2; exit 1; }
echo "screenshot_mlflow: $out (experiment $exp of $uri)"
