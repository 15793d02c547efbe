#!/bin/bash
# Records the model card's post-processed keys with the app's own `eval` and `eval-real`, so no
# figure in the card is typed by hand (train.py writes the rest when it finalizes a model):
#   *_fitted, *_tta_fitted   the test sets with the boxes finished as `detect` finishes them
#                            (boundary boxes along one line joined, point boxes fitted to the
#                            lattice, boundaries cut at the frame, no points on boundaries or
#                            across the frame's edge)
#   synthetic_test_detectable[_large][_tta]_fitted_calibrated   the d' >= 5 sets with each frame
#                            given its pixel size, as the app is given a calibrated file: run at
#                            the model's pixel size and, where the model trained at the frame's
#                            own, as sampled too, boxes fused
#   synthetic_test_detectable[_tta]_fitted_dont_care   d' >= 5 labels, hidden defects unscored
#   synthetic_test[_detectable]_both[_tta]_fitted   the app's default detector (`--method both`:
#                            the model joined with the lattice analysis' boundaries)
#   synthetic_test[_detectable]_large_tta_fitted   the same recipes on 400 unseen frames each
#                            (the *_tta_fitted keys carry a 95 % bootstrap interval over frames)
#   real_frames*             assets/real-set, with the set's crystals and read as CdTe
# then prints the real-frame results of the model alone and of the lattice analysis.
# Usage: training/measure.sh MODEL.onnx CARD.json   (from the repository root, after a release
# build; the test sets under .work/ as training/README.md exports them)
set -e
M=$1; C=$2
B=target/release/defect-detector
export ORT_DYLIB_PATH=${ORT_DYLIB_PATH:-$PWD/.ort/libonnxruntime.so}
F="--merge-boundaries --fit-cells --clip-boundaries --points-off-boundaries 0.25 --points-inside-frame"
for pair in "test-r3:synthetic_test" "test-r3-d5:synthetic_test_detectable" "test-v2:synthetic_test_previous_recipe"; do
  d=${pair%%:*}; k=${pair##*:}
  echo "== $d fitted"; $B eval .work/$d --model $M $F --write-card $C --card-key ${k}_fitted 2>&1 | grep -E "^ *(all|grain_boundary|vacancy|interstitial) +[0-9]+ +[0-9]+ "
  echo "== $d tta fitted"; $B eval .work/$d --model $M $F --tta --bootstrap 1000 --write-card $C --card-key ${k}_tta_fitted 2>&1 | grep -E "^ *(all|grain_boundary|vacancy|interstitial) +[0-9]+ +[0-9]+ |^Bootstrap"
done
# The same recipes on 400 unseen frames each (seed 20261205): an 80-frame set's mAP50 spans about
# ±0.013 (95 % bootstrap interval), too wide to read a target such as 0.98 off it.
for pair in "test-big:synthetic_test_large" "test-big-d5:synthetic_test_detectable_large"; do
  d=${pair%%:*}; k=${pair##*:}
  echo "== $d tta fitted"; $B eval .work/$d --model $M $F --tta --bootstrap 1000 --write-card $C --card-key ${k}_tta_fitted 2>&1 | grep -E "^ *(all|grain_boundary|vacancy|interstitial) +[0-9]+ +[0-9]+ |^Bootstrap"
done
for pair in "test-r3:synthetic_test" "test-r3-d5:synthetic_test_detectable"; do
  d=${pair%%:*}; k=${pair##*:}
  echo "== $d both fitted"; $B eval .work/$d --model $M $F --method both --write-card $C --card-key ${k}_both_fitted 2>&1 | grep -E "^ *all +[0-9]+ +[0-9]+ "
  echo "== $d both tta fitted"; $B eval .work/$d --model $M $F --method both --tta --write-card $C --card-key ${k}_both_tta_fitted 2>&1 | grep -E "^ *all +[0-9]+ +[0-9]+ "
done
echo "== test-r3-d5 fitted, hidden defects don't care"; $B eval .work/test-r3-d5 --model $M $F --hidden-dont-care --write-card $C --card-key synthetic_test_detectable_fitted_dont_care 2>&1 | grep -E "^ *all +[0-9]|Don't"
echo "== test-r3-d5 tta fitted, hidden defects don't care"; $B eval .work/test-r3-d5 --model $M $F --tta --hidden-dont-care --bootstrap 1000 --write-card $C --card-key synthetic_test_detectable_tta_fitted_dont_care 2>&1 | grep -E "^ *all +[0-9]|Don't|^Bootstrap"
echo "== test-big-d5 tta fitted, hidden defects don't care"; $B eval .work/test-big-d5 --model $M $F --tta --hidden-dont-care --bootstrap 1000 --write-card $C --card-key synthetic_test_detectable_large_tta_fitted_dont_care 2>&1 | grep -E "^ *all +[0-9]|Don't|^Bootstrap"
for pair in "test-r3-d5:synthetic_test_detectable" "test-big-d5:synthetic_test_detectable_large"; do
  d=${pair%%:*}; k=${pair##*:}
  echo "== $d fitted, calibrated"; $B eval .work/$d --model $M $F --calibrated --write-card $C --card-key ${k}_fitted_calibrated 2>&1 | grep -E "^ *(all|grain_boundary|vacancy|interstitial) +[0-9]+ +[0-9]+ "
  echo "== $d tta fitted, calibrated"; $B eval .work/$d --model $M $F --tta --calibrated --bootstrap 1000 --write-card $C --card-key ${k}_tta_fitted_calibrated 2>&1 | grep -E "^ *(all|grain_boundary|vacancy|interstitial) +[0-9]+ +[0-9]+ |^Bootstrap"
done
for a in "" "--tta" "--crystal cdte110" "--crystal cdte110 --tta"; do
  echo "== real $a"; $B eval-real --model $M $a --write-card $C 2>&1 | grep -E "^(Si0|CdTe|Si1|bound)"
done
for m in model lattice; do for a in "" "--tta" "--crystal cdte110"; do
  echo "== real $m $a"; $B eval-real --model $M --method $m $a 2>&1 | grep -E "^(Si0|CdTe|Si1|bound)"
done; done
