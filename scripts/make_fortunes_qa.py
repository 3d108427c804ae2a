#!/usr/bin/env python3
"""Question/answer pairs for instruction-tuning the fortunes model: "A <topic> fortune." answered
by a one-line fortune of that topic, as JSONL {"prompt", "completion"} for `prepare --format chat`.

The fortunes model reads windows of 64 characters, so only pairs whose whole ChatML conversation
fits one window are kept (a longer one would be cut, and its second window would lack the
question). Shuffled with a fixed seed, so the validation split (the last lines) spans topics.

  scripts/make_fortunes_qa.py data/fortunes-text data/fortunes-qa.jsonl [--window 64]
"""
import argparse
import json
import pathlib
import random

# ChatML with <|im_start|> and <|im_end|> as one token each, in characters around the two texts:
# <s>user\n Q <e>\n <s>assistant\n A <e>\n
CHATML_OVERHEAD = 1 + 5 + 1 + 1 + 1 + 10 + 1 + 1


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("text_dir", help="one TOPIC.txt per topic, fortunes separated by blank lines")
    parser.add_argument("out", help="the JSONL file to write")
    parser.add_argument("--window", type=int, default=64, help="the model's block size, in characters")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    pairs = []
    for path in sorted(pathlib.Path(args.text_dir).glob("*.txt")):
        topic = path.stem
        question = f"A {topic} fortune."
        budget = args.window - CHATML_OVERHEAD - len(question)
        text = path.read_text(encoding="utf-8")
        for entry in text.split("\n\n"):
            answer = entry.strip()
            if answer and "\n" not in answer and "\t" not in answer and len(answer) <= budget:
                pairs.append({"prompt": question, "completion": answer})
    if not pairs:
        raise SystemExit(f"{args.text_dir}: no fortune fits a window of {args.window} characters")
    random.Random(args.seed).shuffle(pairs)
    with open(args.out, "w", encoding="utf-8") as out:
        for pair in pairs:
            out.write(json.dumps(pair, ensure_ascii=False) + "\n")
    topics = len({p["prompt"] for p in pairs})
    print(f"{len(pairs)} question/answer pairs from {topics} topics in {args.out}")


if __name__ == "__main__":
    main()
