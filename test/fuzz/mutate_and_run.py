"""Runs attn-opt on mutated copies of the example variants and fails if any run ends by a
signal (a crash or an abort) instead of a clean exit code.

usage: mutate_and_run.py ATTN_OPT EXAMPLES_DIR COUNT SEED
"""
import os
import random
import subprocess
import sys
import tempfile

TOKENS = ["?", "0", "-1", "64", "x", "f16", "bf16", "i32", "index", "{causal}", "window = -2",
          "#attn.custom", "#attn.relu<scale = -1.0>", "normalizer_body", "score_mod",
          "attn.yield", "^bb0(", ")", "(", "{", "}", "<", ">", ":", ",", "%arg0", "tensor<",
          "bias(", "kv_lengths(", "attn.attention", "gamma(", "\n"]


def mutate(text, rng):
    for _ in range(rng.randint(1, 4)):
        if not text:
            break
        pos = rng.randrange(len(text))
        span = rng.randint(1, 12)
        kind = rng.randrange(4)
        if kind == 0:
            text = text[:pos] + text[pos + span:]
        elif kind == 1:
            text = text[:pos] + rng.choice(TOKENS) + text[pos:]
        elif kind == 2:
            text = text[:pos] + rng.choice(TOKENS) + text[pos + span:]
        else:
            other = rng.randrange(len(text))
            text = text[:other] + text[pos:pos + span] + text[other:]
    return text


def main():
    attn_opt, examples_dir, count, seed = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    examples = [open(os.path.join(examples_dir, name)).read()
                for name in sorted(os.listdir(examples_dir)) if name.endswith(".mlir")]
    rng = random.Random(seed)
    outcomes = {"accepted": 0, "rejected": 0}
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "mutant.mlir")
        for index in range(count):
            mutant = mutate(examples[index % len(examples)], rng)
            with open(path, "w") as handle:
                handle.write(mutant)
            run = subprocess.run([attn_opt, path, "--canonicalize", "--attn-legalize"],
                                 stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, timeout=60)
            if run.returncode < 0:
                crash = os.path.join(os.getcwd(), "crash-%d.mlir" % index)
                with open(crash, "w") as handle:
                    handle.write(mutant)
                print("CRASH: signal %d on mutant %d (saved to %s)\n%s"
                      % (-run.returncode, index, crash, run.stderr.decode()[-2000:]))
                return 1
            if run.returncode != 0 and not run.stderr:
                print("FAIL: mutant %d rejected without a diagnostic" % index)
                return 1
            outcomes["accepted" if run.returncode == 0 else "rejected"] += 1
    print("no crash in %d mutants: %d accepted, %d rejected with diagnostics"
          % (count, outcomes["accepted"], outcomes["rejected"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
