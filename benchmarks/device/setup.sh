# Set up this repository on the GPU machine (device tool): its image has torch/transformers; the
# other pins travel as wheels in .whl/ (carried), the GGML source in .carry/ggml-src (carried).
#   source benchmarks/device/setup.sh
set -e
PIP="python3 -m pip install -q --no-deps --no-index"
$PIP --break-system-packages .whl/*.whl >/dev/null 2>&1 || $PIP .whl/*.whl >/dev/null
python3 -m pip install -q --no-deps --no-build-isolation --break-system-packages -e . >/dev/null 2>&1 || python3 -m pip install -q --no-deps --no-build-isolation -e . >/dev/null
export OMNIMODEL_GGML_SOURCE=$PWD/.carry/ggml-src
python3 -c "import torch, omnimodel.archs as a; print('device setup: torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'archs', a.names())"
set +e
