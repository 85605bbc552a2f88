#!/usr/bin/env bash
# Strict command-line input (issue #6): bad invocations exit 2 with a message naming the option,
# --help exits 0 for every command. Every case fails at argument parsing (or, for the trained
# context, on the GGUF header), so none runs an evaluation. Usage: tests/test_cli.sh path/to/kvslim
set -u
bin=${1:?usage: test_cli.sh path/to/kvslim}
root=$(cd "$(dirname "$0")/.." && pwd)
model=$root/models/SmolLM2-135M-Instruct.Q4_1.gguf
pass=0 fail=0

# expect CODE PATTERN ARGS...: exit status CODE and PATTERN (grep -E) in stdout+stderr
expect() {
    local code=$1 pattern=$2 out rc
    shift 2
    out=$(timeout 20 "$bin" "$@" 2>&1)
    rc=$?
    if [ "$rc" -eq "$code" ] && grep -qE -- "$pattern" <<<"$out"; then
        pass=$((pass + 1))
    else
        fail=$((fail + 1))
        printf 'FAIL: kvslim %s\n  want exit %s and /%s/, got exit %s:\n%s\n' "$*" "$code" "$pattern" "$rc" "$out"
    fi
}

# usage errors: exit 2, the option and the bad value named
expect 2 "--chunks: 'abc' is not an integer" ppl --chunks abc
expect 2 "--chunks: '5x' is not an integer" ppl --chunks 5x
expect 2 "--chunks: '' is not an integer" ppl --chunks ''
expect 2 "--chunks: -2 is out of range" ppl --chunks -2
expect 2 "--ctx: -1 is out of range \[8, 1048576\]" ppl --ctx -1
expect 2 "--ctx: 99999999999 is out of range" ppl --ctx 99999999999
expect 2 "--ctx: 3 is out of range" ppl --ctx 3
expect 2 "--batch: '1.5' is not an integer" ppl --batch 1.5
expect 2 "unknown option '--bogus'" ppl --bogus
expect 2 "--chunks needs a value" ppl --chunks
expect 2 "unexpected argument 'extra'" ppl extra
expect 2 "--model: empty value" ppl --model ''
expect 2 "--decode: '1e3' is not an integer" sweep --decode 1e3
expect 2 "--chunks: 0 is out of range" sweep --chunks 0
expect 2 "--configs: " sweep --configs ';;'
expect 2 "--tokens: 0 is out of range" info oscar-int2 --tokens 0
expect 2 "missing CONFIG" info
expect 2 "CONFIG: 'nonsense'" info nonsense
# eviction and calibration files (calib=PATH is the tool's; the library takes a loaded handle)
expect 2 "heatkv needs a calibration" info "oscar-int2,heatkv=block,budget=0.5"
expect 1 "calib=/no/such.kvcal: calib: cannot open" info "oscar-int2,heatkv=block,budget=0.5,calib=/no/such.kvcal"
expect 2 "bad magic" info "oscar-int2,heatkv=block,budget=0.5,calib=$0"
expect 2 "calibration measured on 1 layers" info "oscar-int2,heatkv=block,budget=0.5,calib=$root/fuzz/corpus/calib/seed0.kvcal"
expect 2 "calib= given twice" info "oscar-int2,calib=a,calib=b"
expect 2 "budget=0.01 keeps 81 token slots per head, below the 163" info "oscar-int2,sinks=4,evict=uniform,budget=0.01"
expect 0 "at 8192 tokens: [0-9]+ bytes, 1\.3[0-9]+ bits per element" info "oscar-int2,evict=uniform,budget=0.25"
expect 2 "--out FILE is required" calibrate heatkv
expect 2 "missing method name" calibrate
expect 2 "--block: 12 is not a multiple of 8" calibrate heatkv --out x --block 12
expect 2 "--probe-texts" calibrate heatkv --out x --probe-texts 65
expect 2 "--period" calibrate heatkv --out x --period 8
expect 2 "unexpected argument 'fp16'" info fp32 fp16
expect 2 "--tokens: 'abc' is not an integer" bench attention --tokens 1024,abc
expect 2 "--tokens: '' is not an integer" bench attention --tokens 1024,,4096
expect 2 "--tokens: .* more than 8 values" bench attention --tokens 1,2,3,4,5,6,7,8,9
expect 2 "--reps: 0 is out of range" bench attention --reps 0
expect 2 "--kernels: " bench attention --kernels bogus
expect 2 "--configs: " bench attention --configs ';;'
expect 2 "--configs: 'nonsense'" bench attention --configs 'fp32;nonsense' 
expect 2 "--threads: -1 is out of range" bench bandwidth --threads -1
expect 2 "--depth: 'x' is not an integer" bench decode --depth 1024,x
expect 2 "--steps: 0 is out of range" bench decode --steps 0
expect 2 "--cache: " bench decode --cache ';;'
expect 2 "-n: -3 is out of range" generate -n -3 --prompt hi
expect 2 "--temp: 'nan' is not a finite number" generate --temp nan --prompt hi
expect 2 "--temp: 'inf' is not a finite number" generate --temp inf --prompt hi
expect 2 "--temp: 1e999 is out of range" generate --temp 1e999 --prompt hi
expect 2 "--prompt is required" generate -n 4
expect 2 "unknown command 'bogus'" bogus
expect 2 "unknown command 'bench bogus'" bench bogus
expect 2 "missing benchmark name" bench
expect 2 "missing command"
expect 2 "unexpected argument 'x'" version x
# the hint names the command's help
expect 2 "try 'kvslim ppl --help'" ppl --chunks abc
expect 2 "try 'kvslim bench attention --help'" bench attention --bogus

# help: stdout, exit 0, options with defaults and ranges, the exit codes
expect 0 "--ctx N .*in \[8, 1048576\] \(default 512\)" ppl --help
expect 0 "--decode N .*\(default 32\)" sweep -h
expect 0 "--temp T" generate --help
expect 0 "--tokens N" info --help
expect 0 "--tokens N,N" bench attention --help
expect 0 "--depth N,N" bench decode --help
expect 0 "--threads N" bench bandwidth --help
expect 0 "usage: kvslim version" version --help
expect 0 "usage: kvslim calibrate heatkv" calibrate heatkv --help
expect 0 "usage: kvslim calibrate stiefel" calibrate stiefel --help
expect 2 "--seq-len: 4 is out of range" calibrate stiefel --seq-len 4
expect 2 "--rank: 0 is out of range" calibrate stiefel --rank 0
expect 2 "--budget: 1.5 is out of range" calibrate stiefel --budget 1.5
expect 2 "--kl-seqs: 0 is out of range" calibrate stiefel --kl-seqs 0
expect 0 "usage: kvslim ppl" help ppl
expect 0 "usage: kvslim bench attention" help bench attention
expect 0 "2 usage error" --help
expect 0 "bench attention" help
expect 0 "usage: kvslim ppl" ppl --chunks abc --help
expect 0 "^kvslim [0-9]+\.[0-9]+\.[0-9]+" version

# the trained context (8192 for the bundled model) is read from the GGUF header: no model load
if [ -f "$model" ]; then
    expect 2 "trained for 8192 tokens" ppl --ctx 16384
    expect 2 "trained for 8192 tokens" sweep --ctx 8192
    expect 2 "--rank 65 is larger than the head dimension 64" calibrate stiefel --rank 65
    expect 2 "--out needs every layer" calibrate stiefel --layers 2 --out x.kvcal
    expect 2 "--profile-ranks: 8 is not ascending" calibrate stiefel --profile-ranks 16,8
    expect 2 "trained for 8192 tokens" bench decode --depth 8192 --steps 32
    expect 2 "--cache: 'nonsense'" bench decode --depth 8 --steps 1 --cache 'fp32;nonsense'
    # the whole decode measurement, small: a prefill of 16 tokens, 2 timed steps per config
    expect 0 "\| q4_0 \| 16 \| [0-9.]+ \| [0-9.]+ \|" bench decode --depth 0,16 --steps 2 --batch 8 --cache 'fp32;q4_0'
    # the whole calibration path on every layer, two sequences of 8 tokens: inputs, PCA, descent,
    # report, calibration file (a longer timeout than expect's: sanitizer builds run it too)
    tmp=$(mktemp -d)
    out=$(timeout 300 "$bin" calibrate stiefel --seqs 1 --heldout 1 --seq-len 8 --steps 1 --rank 8 --profile-ranks 4,8 \
        --report "$tmp/st" --out "$tmp/st.kvcal" 2>&1)
    if [ $? -eq 0 ] && grep -qE "learned below PCA on held-out tokens: keys [0-9]+ of 30 layers" <<<"$out" &&
        grep -q '"kind":"values"' "$tmp/st.json" && grep -q '<svg' "$tmp/st.svg"; then pass=$((pass + 1)); else
        fail=$((fail + 1)); printf 'FAIL: calibrate stiefel:\n%s\n' "$out"; fi
    expect 0 "30 layers" info "fp32,calib=$tmp/st.kvcal" # the file loads
    # the low-rank cache from that file, timed beside fp16 (the bench checks it against the reference)
    expect 0 "\| lr \| 64 \|" bench attention --tokens 64 --reps 1 \
        --configs "fp16;lr:fp16,self=exact,rope=adjacent,stiefel=8/8,calib=$tmp/st.kvcal"
    # W_o folded with the value bases (oracle 10 end to end: test_tiny_model compares the logits)
    expect 0 "lr: W_o folded with its value bases" sweep --ctx 64 --chunks 1 --decode 2 --fold --out "$tmp/f" \
        --configs "fp32;lr:fp32,self=cache,rope=adjacent,stiefel=8/8,calib=$tmp/st.kvcal;lrw:fp32,self=cache,rope=adjacent,stiefel=8/8,window=4,calib=$tmp/st.kvcal"
    # ranks per layer: --budget fits the learned set at the allocator's ranks, which the cache's
    # stiefel=auto:CR then picks from the same file (and auto alone reads back from the set)
    out=$(timeout 300 "$bin" calibrate stiefel --seqs 1 --heldout 1 --seq-len 8 --steps 1 --budget 0.3 --profile-ranks 8,16,32 \
        --report "$tmp/b" --out "$tmp/b.kvcal" 2>&1)
    if [ $? -eq 0 ] && grep -q "allocated ranks K/V per layer" <<<"$out"; then pass=$((pass + 1)); else
        fail=$((fail + 1)); printf 'FAIL: calibrate stiefel --budget:\n%s\n' "$out"; fi
    expect 0 "ranks K/V per layer" info "fp16,self=exact,rope=adjacent,stiefel=auto:0.3,calib=$tmp/b.kvcal"
    expect 0 "CR 0\.[0-2]|CR 0\.30" info "fp16,self=exact,rope=adjacent,stiefel=auto,calib=$tmp/b.kvcal"
    expect 2 "learned bases are fitted at their ranks" info "fp16,self=exact,rope=adjacent,stiefel=auto:0.5,calib=$tmp/b.kvcal"
    rm -rf "$tmp"
else
    echo "test_cli: $model absent, skipping the trained-context cases"
fi

echo "test_cli: $pass passed, $fail failed"
[ "$fail" -eq 0 ]
