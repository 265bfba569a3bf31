#!/bin/bash
# Bundle layout this script runs in (copied next to it, carried to the GPU machine as one folder):
#   ggml/             the pinned GGML source (omnimodel.toolchain.source.ggml_source_dir())
#   cpp/              the cpp/ project of `omnimodel port pi05 --quant f16` (its run dir)
#   model_f16.gguf    that run's model.gguf;  end_to_end.gguf: its reference/end_to_end.gguf
#   vectors/*.gguf    skills/{siglip_encoder_layer,gemma_decoder_layer,ada_rms_norm,flow_time_mlp,flow_euler_denoise}/test_vector.gguf
# Results: $OUT/res.tgz (benchmarks/results/pi05_tiny_cuda_h100/ holds the 2026-12-06 run).
# π0.5 native build on CUDA: GGML (CUDA, sm_90, no FA kernels), the generated policy, the skill vectors and
# the tiny π0.5 (F16 GGUF) end to end on the GPU (--ngl -1) and the CPU (--ngl 0).
cd "$(dirname "$0")"
R=$OUT/res; mkdir -p $R
{ nvidia-smi -L; NVCC=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1); echo nvcc=$NVCC; $NVCC --version | tail -2; cmake --version | head -1; } > $R/env.txt 2>&1
NVCC=$(command -v nvcc || ls /usr/local/cuda*/bin/nvcc 2>/dev/null | head -1)
t0=$(date +%s)
cmake -S ggml -B gb -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DCMAKE_CUDA_COMPILER=$NVCC -DGGML_CUDA_FA=OFF -DGGML_CUDA_NCCL=OFF \
  -DGGML_NATIVE=OFF -DGGML_BACKEND_DL=OFF -DGGML_OPENMP=ON -DBUILD_SHARED_LIBS=ON -DCMAKE_BUILD_TYPE=Release -DGGML_BUILD_TESTS=OFF \
  -DGGML_BUILD_EXAMPLES=OFF -DCMAKE_INSTALL_PREFIX=$PWD/gp -DCMAKE_INSTALL_LIBDIR=lib > $R/ggml_cfg.log 2>&1 || { tail -30 $R/ggml_cfg.log; exit 1; }
cmake --build gb -j16 > $R/ggml_build.log 2>&1 || { tail -30 $R/ggml_build.log; exit 1; }
cmake --install gb > /dev/null
echo "ggml built in $(( $(date +%s) - t0 )) s"
cmake -S cpp -B pb -DGGML_DIR=$PWD/gp -DCMAKE_BUILD_TYPE=Release > $R/pol_cfg.log 2>&1 && cmake --build pb -j16 > $R/pol_build.log 2>&1 || { tail -30 $R/pol_cfg.log $R/pol_build.log; exit 1; }
export LD_LIBRARY_PATH=$PWD/pb:$PWD/gp/lib
for v in vectors/*.gguf; do
  n=$(basename $v .gguf)
  for ngl in -1 0; do
    rm -rf ref; mkdir ref; cp $v ref/v.gguf
    pb/policy_cli validate $v ref $R/${n}_ngl${ngl} --ngl $ngl --threads 8 > $R/${n}_ngl${ngl}.log 2>&1; echo "$n ngl=$ngl rc=$?: $(tail -1 $R/${n}_ngl${ngl}.log)"
  done
done
for ngl in -1 0; do
  pb/policy_cli run model_f16.gguf --inputs end_to_end.gguf --ngl $ngl --threads 8 > $R/e2e_ngl${ngl}.json 2> $R/e2e_ngl${ngl}.err; echo "e2e ngl=$ngl rc=$?"
  pb/policy_cli bench model_f16.gguf --inputs end_to_end.gguf --ngl $ngl --threads 8 -n 10 --warmup 2 2>&1 | tail -1 | tee $R/bench_ngl${ngl}.json
done
cd $OUT && tar czf res.tgz res && rm -rf res
