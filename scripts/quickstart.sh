#!/usr/bin/env bash
# lmforge in one command, on a fresh Debian 12 machine: installs what it needs, builds, prepares
# the fortunes corpus, pretrains a small GPT on every topic but one (about five minutes on two CPU
# cores), fine-tunes it on the held-out topic with early stopping, plots the losses and samples,
# then instruction-tunes the pretrained model on generated question/answer pairs ("A love
# fortune." -> a fortune of that topic; about a minute) and prints one `lmforge chat` reply.
# Re-running resumes finished or interrupted runs instead of starting over.
#   HOLDOUT=computers  the topic kept for fine-tuning
#   QUICK=1            a much shorter run (a smoke test)
set -euo pipefail
cd "$(dirname "$0")/.."

holdout=${HOLDOUT:-computers}
build_dir=${BUILD_DIR:-build}
lmforge="$build_dir/bin/lmforge"
extra=()
if [ "${QUICK:-0}" = 1 ]; then
  extra=(training.max_steps=60 eval.interval=20 checkpoint.interval=20)
fi

step() { printf '\n== %s\n' "$*"; }

step "installing dependencies"
scripts/install_deps.sh

step "building lmforge"
cmake -S . -B "$build_dir" -G Ninja -DCMAKE_BUILD_TYPE=Release ${LMF_CMAKE_ARGS:-} >/dev/null
cmake --build "$build_dir" -j"$(nproc)" --target lmforge_cli

step "preparing the fortunes corpus (one character tokenizer for every topic)"
LMFORGE="$lmforge" scripts/get_corpus.sh fortunes data/fortunes
[ -f "data/fortunes-text/$holdout.txt" ] || { echo "no fortunes topic '$holdout'" >&2; exit 1; }
pretrain_inputs=()
for f in data/fortunes-text/*.txt; do
  [ "$f" = "data/fortunes-text/$holdout.txt" ] || pretrain_inputs+=("$f")
done
"$lmforge" prepare --input "${pretrain_inputs[@]}" --out data/fortunes/pretrain \
  --tokenizer data/fortunes/tokenizer.json --eot
"$lmforge" prepare --input "data/fortunes-text/$holdout.txt" --out data/fortunes/finetune \
  --tokenizer data/fortunes/tokenizer.json --eot

step "pretraining on every topic but '$holdout'"
"$lmforge" train configs/fortunes_pretrain.yaml "${extra[@]}"

step "fine-tuning on '$holdout' with early stopping"
"$lmforge" train configs/fortunes_finetune.yaml "${extra[@]}"

step "plotting the losses"
"$lmforge" plot runs/fortunes_pretrain -o runs/fortunes_pretrain/loss.png
"$lmforge" plot runs/fortunes_finetune -o runs/fortunes_finetune/loss.png

step "validation loss on '$holdout' before and after fine-tuning"
printf 'pretrained: '; "$lmforge" eval --checkpoint runs/fortunes_pretrain/final --data data/fortunes/finetune/val.bin | head -1
printf 'fine-tuned: '; "$lmforge" eval --checkpoint runs/fortunes_finetune/final --data data/fortunes/finetune/val.bin | head -1

step "a sample from the pretrained model"
"$lmforge" generate --checkpoint runs/fortunes_pretrain/final --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 1
step "a sample from the '$holdout' model"
"$lmforge" generate --checkpoint runs/fortunes_finetune/final --max-new-tokens 300 --temperature 0.8 --top-k 40 --seed 1
echo

step "instruction tuning on generated question/answer pairs (the answers are trained, not the questions)"
python3 scripts/make_fortunes_qa.py data/fortunes-text data/fortunes-qa.jsonl
# The pretrained model's own tokenizer: it holds ChatML's markers as special tokens.
"$lmforge" prepare --format chat --input data/fortunes-qa.jsonl --out data/fortunes/chat \
  --tokenizer runs/fortunes_pretrain/final/tokenizer.json
"$lmforge" train configs/fortunes_chat.yaml "${extra[@]}"
"$lmforge" plot runs/fortunes_chat -o runs/fortunes_chat/loss.png

step "one chat reply: A love fortune."
echo '{"prompt": "A love fortune."}' |
  "$lmforge" chat --checkpoint runs/fortunes_chat/final --temperature 0.8 --top-k 40 --seed 1
printf '\ndone: runs/ holds the checkpoints, metrics.jsonl and loss.png of the three runs.\n'
