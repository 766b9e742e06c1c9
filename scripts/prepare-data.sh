#!/usr/bin/env bash
# Prepares the offline training data of attn-train under BUILD/data from Debian packages
# (scripts/install-deps.sh installs them): Fashion-MNIST idx files (gunzipped), the 8×8 digits
# (sklearn's digits.csv.gz, taken out of the python3-sklearn .deb with dpkg -x, no Python),
# the pocketsphinx test utterances and a spoken-digits set made with espeak-ng + sox from a
# fixed seed. Idempotent: each part is skipped when its stamp exists.
set -euo pipefail
build=${1:-build}
data="$build/data"
mkdir -p "$data"

# Fashion-MNIST: the names torch::data::datasets::MNIST expects.
if [ ! -f "$data/fashion-mnist/.done" ]; then
  src=/usr/share/datasets/fashion-mnist
  if [ -f "$src/train-images-idx3-ubyte.gz" ]; then
    mkdir -p "$data/fashion-mnist"
    for f in train-images-idx3-ubyte train-labels-idx1-ubyte t10k-images-idx3-ubyte t10k-labels-idx1-ubyte; do
      gunzip -c "$src/$f.gz" > "$data/fashion-mnist/$f"
    done
    touch "$data/fashion-mnist/.done"
    echo "prepare-data: fashion-mnist ready"
  else
    echo "prepare-data: warning: dataset-fashion-mnist is not installed; skipping Fashion-MNIST" >&2
  fi
fi

# 8×8 digits from python3-sklearn: the installed file if present, else the .deb unpacked.
if [ ! -f "$data/digits/.done" ]; then
  mkdir -p "$data/digits"
  csv=/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz
  if [ ! -f "$csv" ]; then
    tmp=$(mktemp -d)
    if (cd "$tmp" && apt-get download python3-sklearn >/dev/null 2>&1); then
      dpkg -x "$tmp"/python3-sklearn_*.deb "$tmp/x"
      csv="$tmp/x/usr/lib/python3/dist-packages/sklearn/datasets/data/digits.csv.gz"
    fi
  fi
  if [ -f "$csv" ]; then
    gunzip -c "$csv" > "$data/digits/digits.csv"
    touch "$data/digits/.done"
    echo "prepare-data: digits ready"
  else
    echo "prepare-data: warning: could not get python3-sklearn's digits.csv.gz; skipping digits" >&2
  fi
  rm -rf "${tmp:-/nonexistent}"
fi

# pocketsphinx test utterances with their transcripts.
if [ ! -f "$data/pocketsphinx/.done" ]; then
  src=/usr/share/pocketsphinx/test/data
  if [ -d "$src/librivox" ]; then
    mkdir -p "$data/pocketsphinx"
    {
      for set in cards librivox; do
        trans="$src/$set/$set.transcription"
        [ -f "$trans" ] || trans="$src/$set/transcription"
        # "<s> words </s> (id)" → "path<TAB>words"
        sed -E 's/<\/?s>//g; s/^ +//; s/ +\(([^)]*)\) *$/\t\1/' "$trans" |
          while IFS=$'\t' read -r words id; do
            words=$(echo "$words" | sed -E 's/ +$//')
            printf '%s\t%s\n' "$src/$set/$id.wav" "$words"
          done
      done
    } > "$data/pocketsphinx/all.tsv"
    touch "$data/pocketsphinx/.done"
    echo "prepare-data: pocketsphinx utterances ready"
  else
    echo "prepare-data: warning: pocketsphinx-testdata is not installed; skipping" >&2
  fi
fi

# Spoken digits: 1–4 digit sequences, voices × variants, speeds and pitches from seed 1234.
if [ ! -f "$data/spoken-digits/.done" ]; then
  if command -v espeak-ng >/dev/null && command -v sox >/dev/null; then
    out="$data/spoken-digits"
    mkdir -p "$out/wav"
    words=(zero one two three four five six seven eight nine)
    voices=(en en-us en-gb-scotland en-gb-x-rp en-gb-x-gbclan en-gb-x-gbcwmd en-029)
    variants=("" +m3 +f2 +f4 +klatt)
    RANDOM=1234
    make_split() { # name count
      local name=$1 count=$2 i
      : > "$out/$name.tsv"
      for ((i = 0; i < count; i++)); do
        local n=$((RANDOM % 4 + 1)) text="" k
        for ((k = 0; k < n; k++)); do text+="${text:+ }${words[RANDOM % 10]}"; done
        local voice=${voices[RANDOM % ${#voices[@]}]}${variants[RANDOM % ${#variants[@]}]}
        local speed=$((130 + RANDOM % 70)) pitch=$((30 + RANDOM % 40))
        local file="wav/$name-$i.wav"
        espeak-ng -v "$voice" -s "$speed" -p "$pitch" -w "$out/tmp.wav" "$text"
        sox -D -V1 "$out/tmp.wav" -r 16000 -c 1 -b 16 "$out/$file" vol 0.9
        printf '%s\t%s\n' "$file" "$text" >> "$out/$name.tsv"
      done
      rm -f "$out/tmp.wav"
    }
    make_split train 1200
    make_split test 200
    touch "$out/.done"
    echo "prepare-data: spoken digits ready (1200 train, 200 test utterances)"
  else
    echo "prepare-data: warning: espeak-ng or sox missing; skipping spoken digits" >&2
  fi
fi
