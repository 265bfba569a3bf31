# OpenVLA-OFT after the architecture seam: port the shipped suite policy at F16 (CPU backend,
# local sandbox) and run the 400-episode closed loop through the native build, seed 0, as
# benchmarks/results/eval_suite_policy_native_f16.json was measured. Writes $OUT/.
source benchmarks/device/setup.sh
nproc
CK=$(python3 -m omnimodel.cli zoo path openvla-oft-tiny-suite)
( time python3 -m omnimodel.cli port openvla-oft --checkpoint "$CK" --quant f16 --sandbox local --out runs/suite-f16 ) > $OUT/port.log 2>&1
tail -5 $OUT/port.log
cp runs/suite-f16/validation.json $OUT/validation_suite_f16.json 2>/dev/null
( time python3 -m omnimodel.cli eval runs/suite-f16 --workers $(( $(nproc) - 1 )) --out $OUT/eval_suite_policy_native_f16_seam.json ) > $OUT/eval.log 2>&1
tail -8 $OUT/eval.log
