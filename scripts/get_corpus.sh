#!/bin/sh
# Fetches and prepares a training corpus. Today: Debian's `fortunes` (installed with apt-get when
# missing), turned into one text file per topic with entries separated by blank lines in
# OUT_DIR-text/, then `lmforge prepare`d into OUT_DIR (train.bin, val.bin, tokenizer.json,
# meta.json). The text lives beside the dataset, not inside it: prepare replaces its output
# directory as a whole and refuses one that contains its input. The char tokenizer reserves
# ChatML's <|im_start|> and <|im_end|> as special tokens, so that a model pretrained on it can be
# instruction-tuned later (`prepare --format chat`); they take the ids after <|endoftext|>.
#
#   scripts/get_corpus.sh fortunes [OUT_DIR]      (default OUT_DIR: data/fortunes)
#   LMFORGE=path/to/lmforge TOKENIZER=char|FILE|GPT2_DIR scripts/get_corpus.sh fortunes
set -eu

usage() { echo "usage: $0 fortunes [OUT_DIR]" >&2; exit 2; }
[ $# -ge 1 ] || usage
name="$1"
[ "$name" = fortunes ] || usage
out="${2:-data/fortunes}"
tokenizer="${TOKENIZER:-char}"
src=/usr/share/games/fortunes

if [ -z "${LMFORGE:-}" ]; then
  for candidate in build/bin/lmforge "$(command -v lmforge || true)"; do
    if [ -n "$candidate" ] && [ -x "$candidate" ]; then LMFORGE="$candidate"; break; fi
  done
fi
[ -n "${LMFORGE:-}" ] || { echo "lmforge not found: build it or set LMFORGE=path" >&2; exit 1; }

if [ ! -d "$src" ]; then
  echo "installing the fortunes package ..." >&2
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq && $SUDO apt-get install -y -qq fortunes >/dev/null
fi

# One document per topic; the `.dat` indexes and `.u8` links are the same text again.
text="$out-text"
mkdir -p "$text"
for f in "$src"/*; do
  base=$(basename "$f")
  case "$base" in *.dat|*.u8) continue ;; esac
  [ -f "$f" ] || continue
  # A line holding only '%' separates entries; a blank line separates them in the output.
  sed 's/^%$//' "$f" > "$text/$base.txt"
done

set --
if [ "$tokenizer" = char ]; then set -- --special-token '<|im_start|>' --special-token '<|im_end|>'; fi
"$LMFORGE" prepare --input "$text" --out "$out" --tokenizer "$tokenizer" --eot "$@"
echo "corpus ready in $out" >&2
