"""Start a slimserve gateway with an example model and show how to call it.

Trains a small RandomForest on scikit-learn's bundled iris data, lays it out
as a SageMaker model directory (examples/iris/code/inference.py + the
pickled estimator), deploys it as endpoint ``iris`` (2048 MB), and keeps the
gateway in the foreground until Ctrl-C.
"""
from __future__ import annotations

import argparse
import os
import pickle
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from gateway.client import Client, ClientError  # noqa: E402


def build_model_dir(dest: Path) -> Path:
    from sklearn.datasets import load_iris
    from sklearn.ensemble import RandomForestClassifier

    X, y = load_iris(return_X_y=True)
    model = RandomForestClassifier(n_estimators=50, random_state=0).fit(X, y)
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(ROOT / "examples" / "iris", dest)
    (dest / "model.pickle").write_bytes(pickle.dumps(model))
    return dest


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--state-dir", default=".slimserve")
    args = ap.parse_args()
    state = Path(args.state_dir)
    gw = subprocess.Popen(
        [sys.executable, "-m", "gateway.cli", "serve", "--port", str(args.port), "--state-dir", str(state)],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env=dict(os.environ, PYTHONPATH=str(ROOT)),
    )
    url = None
    for line in gw.stdout:
        sys.stdout.write(line)
        m = re.search(r"listening on (http://\S+)", line)
        if m:
            url = m.group(1)
            break
    if url is None:
        print("slimserve demo: the gateway did not start (see above)", file=sys.stderr)
        return gw.wait() or 1
    client = Client(url, state_dir=state)
    if "iris" not in [e["name"] for e in client.endpoints()]:
        print("deploying example endpoint 'iris' (RandomForest, 2048 MB) ...", flush=True)
        try:
            client.deploy("iris", build_model_dir(state / "example-model"), memory_mb=2048, tags={"team": "demo"})
        except ClientError as exc:
            print(f"slimserve demo: deploy failed: {exc}", file=sys.stderr)
            gw.terminate()
            return 1
    token_path = (state / "admin-token").resolve()
    state = state.resolve()
    bin_dir = Path(sys.executable).parent
    print(f"""
The gateway is up at {url} with endpoint 'iris'. Every AWS-style API is signed (SigV4) with the
access key the gateway generated in its state dir. Try, from another shell (any directory: the
client commands find this gateway by themselves, --url and --state-dir only make it explicit):

  eval "$({bin_dir}/slimserve credentials --url {url} --state-dir {state})"    # AWS_* variables for the key

  curl -s --aws-sigv4 "aws:amz:us-east-1:sagemaker" --user "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" \\
       -X POST {url}/endpoints/iris/invocations \\
       -H 'Content-Type: application/json' -d '[[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]'

  {bin_dir}/python -c "import boto3; c = boto3.client('sagemaker-runtime'); print(c.invoke_endpoint(
  EndpointName='iris', ContentType='text/csv', Body='5.9,3.0,5.1,1.8')['Body'].read())"

  {bin_dir}/slimserve invoke iris --data '5.9,3.0,5.1,1.8' --content-type text/csv --url {url} --state-dir {state}

  {bin_dir}/slimserve usage --url {url} --state-dir {state}      # one billed record per invocation
  {bin_dir}/slimserve describe iris --url {url} --state-dir {state}
  {bin_dir}/slimserve load iris --pattern burst --out /tmp/lunch --url {url} --state-dir {state}   # a lunch spike
  {bin_dir}/slimserve bill --format html --output bill.html --url {url} --state-dir {state}       # where the money went
  curl -s {url}/metrics | grep slimserve_

Admin token: {token_path}. Ctrl-C stops the gateway.
""", flush=True)
    signal.signal(signal.SIGINT, lambda *a: gw.send_signal(signal.SIGINT))
    signal.signal(signal.SIGTERM, lambda *a: gw.send_signal(signal.SIGTERM))
    for line in gw.stdout:
        sys.stdout.write(line)
    return gw.wait()


if __name__ == "__main__":
    sys.exit(main())
