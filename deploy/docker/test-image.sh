#!/usr/bin/env bash
# Build the CPU image (deploy/docker/Dockerfile.cpu) with podman from a clean checkout and
# smoke-test it in the container: `edgestream --version`, `config check` on a mounted config, an
# offline run of a file camera to JSONL, and the image's HEALTHCHECK on a live run.
#
# No registry is reachable here, so the base is a Debian 12 made with debootstrap (cached as
# localhost/debian-py:bookworm; ~1.5 min the first time) and passed as the BASE build arg; pip
# in the build reaches the index through the host's network and CA bundle.
# Run as root on Debian 12 (CI: the last tier of .ci/run). Skip with EDGESTREAM_SKIP_IMAGE=1.
set -euo pipefail
cd "$(dirname "$0")/../.."
if [[ "${EDGESTREAM_SKIP_IMAGE:-0}" == "1" ]]; then
    echo "image test skipped (EDGESTREAM_SKIP_IMAGE=1)"
    exit 0
fi
start=$SECONDS
step() { echo "== image: $* ($((SECONDS - start)) s)"; }
WORK=${EDGESTREAM_IMAGE_WORK:-/var/tmp/edgestream-image}
BASE_TAG=localhost/debian-py:bookworm
TAG=localhost/edgestream:cpu-test
NAME=edgestream-image-test-$$
mkdir -p "$WORK"

step "tools"
if ! command -v podman >/dev/null || ! command -v debootstrap >/dev/null || [[ ! -x /usr/sbin/runc ]]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq podman runc debootstrap >/dev/null
fi
if [[ ! -s /etc/containers/containers.conf ]]; then
    # without it runc (and crun) fail here with "setrlimit ... operation not permitted"
    printf '[containers]\ndefault_ulimits = []\n' >/etc/containers/containers.conf
fi
PODMAN=(podman --runtime /usr/sbin/runc)

if ! "${PODMAN[@]}" image exists "$BASE_TAG"; then
    step "debootstrap a Debian 12 base"
    mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
    rm -rf "$WORK/rootfs"
    debootstrap --variant=minbase --include=python3,python3-venv,python3-pip bookworm \
        "$WORK/rootfs" "${mirror:-http://deb.debian.org/debian}" >"$WORK/debootstrap.log"
    tar -C "$WORK/rootfs" -c . | "${PODMAN[@]}" import - "$BASE_TAG" >/dev/null
    rm -rf "$WORK/rootfs"
fi

step "build $TAG"
"${PODMAN[@]}" build --quiet --format docker --network host -v /etc/ssl/certs:/etc/ssl/certs:ro \
    --build-arg BASE="$BASE_TAG" -f deploy/docker/Dockerfile.cpu -t "$TAG" . >/dev/null

t=$(mktemp -d)
cleanup() {
    "${PODMAN[@]}" rm -f "$NAME" >/dev/null 2>&1 || true
    rm -rf "$t"
}
trap cleanup EXIT
mkdir -p "$t/etc" "$t/data" "$t/out"
chmod 777 "$t/out"
ffmpeg -v error -f lavfi -i testsrc=size=320x240:rate=10 -t 1 -pix_fmt yuv420p "$t/data/clip.mp4"
cp stages/detect/models/demo.onnx "$t/data/"
cat >"$t/etc/edgestream.yaml" <<'YAML'
name: imagetest
realtime: false
cameras:
  - id: cam
    url: /data/clip.mp4
model:
  weights: /data/demo.onnx
sinks:
  jsonl:
    path: /out/{camera}.jsonl
metrics:
  port: 0
YAML
RUN=("${PODMAN[@]}" run --rm --no-healthcheck --network none --shm-size=256m
     -v "$t/etc:/etc/edgestream:ro" -v "$t/data:/data:ro" -v "$t/out:/out")

step "edgestream --version"
"${RUN[@]}" "$TAG" --version | grep -E '^edgestream [0-9]'
[[ "$("${RUN[@]}" --entrypoint id "$TAG" -u)" == "10001" ]] || { echo "not non-root"; exit 1; }

step "installed versions = .ci/constraints.txt (the lock)"
"${RUN[@]}" -v "$PWD/.ci/constraints.txt:/tmp/constraints.txt:ro" --entrypoint python3 "$TAG" -c '
import re, sys
from importlib.metadata import distributions
norm = lambda n: re.sub(r"[-_.]+", "-", n).lower()
lines = [l.split("#")[0].split(";")[0].strip() for l in open("/tmp/constraints.txt")]
pins = dict((norm(n), v.strip()) for n, v in (l.split("==", 1) for l in lines if "==" in l))
venv = ("edgestream", "pip", "setuptools", "wheel")  # this project, and what venv brings
got = {norm(d.metadata["Name"]): d.version for d in distributions() if d.metadata["Name"] not in venv}
bad = [f"{n} {v} (lock: {pins[n]})" for n, v in sorted(got.items()) if n in pins and v != pins[n]]
free = sorted(n for n in got if n not in pins)
print(f"{len(got)} distributions, {len(got) - len(free)} pinned by the lock")
sys.exit(f"not the locked versions: {bad}" if bad else f"not in the lock: {free}" if free else 0)
'

step "config check (mounted config)"
"${RUN[@]}" "$TAG" config check /etc/edgestream/edgestream.yaml

step "offline run: file camera -> JSONL"
"${RUN[@]}" "$TAG"  # the image's default command: run -c /etc/edgestream/edgestream.yaml
n=$(grep -c '"type": *"detections"' "$t/out/cam.jsonl" || true)
[[ "$n" == "10" ]] || { echo "expected 10 detections messages, got $n"; exit 1; }
echo "10 frames in, 10 detections messages out"

step "HEALTHCHECK on a live run"
sed -i -e 's/^realtime: false/realtime: true/' -e 's/^  port: 0/  port: 9752/' \
    -e 's#^    url: /data/clip.mp4#    url: /data/clip.mp4\n    loop: true#' "$t/etc/edgestream.yaml"
# --health-interval=disable: no systemd timer (none runs here); `healthcheck run` still works
"${PODMAN[@]}" run -d --name "$NAME" --health-interval=disable --network none --shm-size=256m \
    -v "$t/etc:/etc/edgestream:ro" -v "$t/data:/data:ro" -v "$t/out:/out" "$TAG" >/dev/null
for _ in $(seq 60); do
    if "${PODMAN[@]}" healthcheck run "$NAME" >/dev/null 2>&1; then
        echo "healthy"
        break
    fi
    sleep 2
done
"${PODMAN[@]}" healthcheck run "$NAME" >/dev/null || { "${PODMAN[@]}" logs "$NAME" | tail -20; exit 1; }
"${PODMAN[@]}" stop -t 20 "$NAME" >/dev/null
code=$("${PODMAN[@]}" inspect -f '{{.State.ExitCode}}' "$NAME")
[[ "$code" == "0" ]] || { echo "SIGTERM exit $code"; exit 1; }
"${PODMAN[@]}" image prune -f >/dev/null  # the build stage's layers
step "passed"
