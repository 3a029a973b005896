#!/usr/bin/env bash
# Coverage-guided fuzzing of Coffer's decoders: `fuzz/run.sh SECONDS [TARGET...]`.
#
# Builds the targets with cargo-fuzz on the nightly toolchain (installing cargo-fuzz if it is
# missing), makes a seed corpus from a real repository (a fresh one written by the debug build of the
# binary: two backups of a generated tree and a stream, then a forget + prune), and runs each
# target for SECONDS (all targets when none is named). Prints executions and crashes per
# target; a crash's input is kept in fuzz/artifacts/TARGET/ and the script exits 1.
# Every crash found becomes a regression test in repo-format/tests/hostile_input.rs.
set -euo pipefail
cd "$(dirname "$0")/.."
seconds=${1:?usage: fuzz/run.sh SECONDS [TARGET...]}
shift
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(sealed keyfile config pack_header index tree snapshot plan lease drill config_file excludes)
fi

if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: the nightly toolchain is needed (rustup toolchain install nightly)" >&2
  exit 2
fi
if ! cargo +nightly fuzz --version >/dev/null 2>&1; then
  echo "fuzz/run.sh: installing cargo-fuzz" >&2
  cargo install cargo-fuzz --locked
fi

# The seed corpus, made once per checkout (delete fuzz/seeds to make it again).
if [ ! -d fuzz/seeds ]; then
  cargo build -q -p coffer-cli
  cargo build -q -p coffer-repo --example fuzz_seeds
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  export COFFER_PASSWORD=fuzz-seed-password COFFER_REPO="$work/repo"
  coffer=target/debug/coffer
  mkdir -p "$work/tree/sub/deeper"
  for i in $(seq 1 40); do head -c $((i * 997)) /dev/urandom > "$work/tree/file-$i"; done
  printf 'DATABASE_URL=postgres://app:secret@db/app\n' > "$work/tree/.env"
  ln -s file-1 "$work/tree/sub/link"
  echo hello > "$work/tree/sub/deeper/note"
  "$coffer" -q init
  "$coffer" -q backup "$work/tree" --tag seed
  seq 1 200000 | "$coffer" -q backup --stdin-name db/app.sql
  echo changed >> "$work/tree/file-3"
  "$coffer" -q backup "$work/tree"
  "$coffer" -q forget --keep-last 2 --prune --grace 0s >/dev/null
  "$coffer" -q drill >/dev/null
  target/debug/examples/fuzz_seeds "$COFFER_REPO" fuzz/seeds.new
  # Hand-written seeds for the text parsers.
  mkdir -p fuzz/seeds.new/config_file fuzz/seeds.new/excludes
  python3 - docs/config.md fuzz/seeds.new/config_file <<'PY'
import re, sys
text = open(sys.argv[1]).read()
for n, block in enumerate(re.findall(r"```toml\n(.*?)```", text, re.S)):
    open(f"{sys.argv[2]}/example-{n}.toml", "w").write(block)
PY
  printf '%s\n' '*.log' '/var/cache/' 'node_modules' 'docs/**/*.md' '.git/' '' '/var/cache/x' '/home/a/b.log' '/src/docs/x/y.md' > fuzz/seeds.new/excludes/list
  mv fuzz/seeds.new fuzz/seeds
fi

status=0
printf '%-12s %14s %10s %8s\n' target executions exec/s crashes
for t in "${targets[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t" "fuzz/seeds/$t"
  log=$(mktemp)
  if (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" "seeds/$t" -- \
        -max_total_time="$seconds" -print_final_stats=1 -artifact_prefix="artifacts/$t/" \
        -timeout=10 -rss_limit_mb=2048) >"$log" 2>&1; then
    crashes=0
  else
    crashes=$(find "fuzz/artifacts/$t" -type f | wc -l)
    status=1
    tail -40 "$log" >&2
  fi
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  printf '%-12s %14s %10s %8s\n' "$t" "${execs:-?}" "${rate:-?}" "$crashes"
  rm -f "$log"
done
exit $status
