#!/bin/bash
# Wheels for running bench/gpu_throughput.sh on a GPU machine that cannot reach a package index but
# has Python, CUDA torch, torchvision, numpy, scipy, scikit-learn, scikit-image, pillow, pytest,
# requests, httpx, jinja2, werkzeug and pyyaml installed (a typical CUDA machine image). Downloads,
# into .whl/ (git-ignored), the wheels of what gantry, its benches and moto's S3 server need beyond
# those, at gantry's locked versions (requirements/*.lock), for the machine's Python:
#
#     bash bench/gpu_wheels.sh          # CPython 3.12, manylinux x86-64 (default)
#     bash bench/gpu_wheels.sh 3.11     # another CPython
#
# Then copy the repository with .whl/ to that machine; bench/gpu_throughput.sh installs them there
# (pip --no-index --no-deps into /tmp/gantry-site) before it runs anything. About 45 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
PYVER=${1:-3.12}
DEST=.whl
rm -rf "$DEST" && mkdir -p "$DEST"
# gantry's own needs (api.lock and worker.lock) that such an image lacks, or holds at other versions;
# then moto's S3 server (dev.lock) and what it imports to serve S3.
PACKAGES=(
    alembic Mako SQLAlchemy
    celery kombu amqp billiard vine click click-didyoumean click-plugins click-repl prompt_toolkit
    wcwidth tzlocal python-dateutil six
    boto3 botocore s3transfer jmespath urllib3
    pydantic pydantic_core pydantic-settings annotated-types typing-inspection typing_extensions
    python-dotenv
    fastapi starlette opentelemetry-api annotated-doc python-multipart uvicorn h11 anyio idna
    redis psycopg psycopg-binary rich markdown-it-py mdurl Pygments prometheus_client
    torch_fidelity
    moto cryptography cffi pycparser xmltodict responses Flask flask-cors blinker itsdangerous
    Werkzeug py-partiql-parser
)
pins=()
for name in "${PACKAGES[@]}"; do
    pin=$(grep -ihE "^${name}==" requirements/worker.lock requirements/dev.lock | head -1 | cut -d' ' -f1)
    [ -n "$pin" ] || { echo "gpu_wheels: $name is in no lock file" >&2; exit 1; }
    pins+=("$pin")
done
python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version "$PYVER" \
    --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 \
    --platform manylinux_2_34_x86_64 -d "$DEST" "${pins[@]}"
echo "$(ls "$DEST" | wc -l) wheels, $(du -sh "$DEST" | cut -f1), in $DEST/ for CPython $PYVER"
